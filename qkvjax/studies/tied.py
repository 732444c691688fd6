"""`tied`: do Q, K and V need three independent matrices?

Tie modes (``MODES``; each its own program, since they differ in which
parameters exist) on the selection task (verb -> the noun it selects: an
asymmetric relation) and the match task (probe noun -> the noun of its
category: a symmetric one); each (task, mode) is a condition ``task/mode``.
With W_K = W_Q the scores h_i^T W W^T h_j are symmetric and, by Cauchy-Schwarz,
no key of norm <= ||W^T h_i|| outscores the token itself: we measure what that
does at the prediction position.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np

from qkvjax import config as config_lib
from qkvjax import plotting
from qkvjax import report
from qkvjax import stats
from qkvjax import study
from qkvjax import train
from qkvjax.study import Claim, Figure
from qkvjax.tasks import base

MODES = {  # model overrides of each tie mode
    "none": {"model.tie": "none", "model.value_proj": True},
    "qk": {"model.tie": "qk", "model.value_proj": True},
    "qkv": {"model.tie": "qkv", "model.value_proj": True},
    "no_value": {"model.tie": "none", "model.value_proj": False}}
PLAIN = {"none": "separate W_Q, W_K, W_V", "qk": "W_K = W_Q", "qkv": "W_Q = W_K = W_V",
         "no_value": "no W_V (V = layer input)"}
LABELS = {m: re.sub(r"(W_[QKV])", r"$\1$", p) for m, p in PLAIN.items()}  # for figures
COLORS = {"none": "k", "qk": plotting.MATRIX_COLORS["key"],
          "qkv": plotting.MATRIX_COLORS["value"], "no_value": plotting.MATRIX_COLORS["out"]}
TASKS = {  # title; the bar for "learned": the best accuracy from the last token alone
    "selection": ("selection: verb -> the noun it selects\n(asymmetric)", "verb_only_accuracy"),
    "match": ("match: probe noun -> the noun of its category\n(symmetric)",
              "probe_only_accuracy")}
QUOTE_INDEPENDENT = "Q/K/V come from three completely independent matrix multiplications"
QUOTE_SEPARATE = ("This separation enables more expressive attention patterns than "
                  "using the same representation for all three roles.")
QUOTE_SELF = ("(consequence of W_K = W_Q: symmetric scores, and a token scores itself "
              "at least as high as any key of no larger norm)")
# Per-head metrics are also logged over the heads: their mean, or the best head's.
HEADS = {"attn_self": "mean", "attn_target": "best", "self_ge_target": "mean",
         "key_norm_ratio": "mean"}


def conditions(config) -> dict[str, dict]:
  return {f"{t}/{m}": {"task": t, **MODES[m]} for t in config.tasks for m in config.conditions}


def validate(c) -> None:
  config_lib.validate_common(c)
  for path, names in (("conditions", MODES), ("tasks", TASKS)):
    config_lib.require_values(c, path, names.__contains__,
                              f"distinct names from {', '.join(names)}")
  for path, default in (("model.tie", "none"), ("model.value_proj", True)):
    config_lib.require(config_lib.field(c, path) == default, path, config_lib.field(c, path),
                       f"{default!r}, set per condition by this study (choose variants "
                       "with config.conditions)")
  config_lib.require(0 < c.threshold <= 1, "threshold", c.threshold, "0 < threshold <= 1")
  config_lib.require_at_least(c, ("eval_batch_size",))
  config_lib.require_at_least(c, ("acc_margin", "speed_margin"), 0)


# ---- metric (inside the jit) ----------------------------------------------------------
def eval_metrics(m) -> dict:
  """On one fixed eval batch: loss, accuracy, accuracy with uniform attention
  (scores times 0: no selection, values kept); per site, ||S - S^T|| / ||S|| of
  the scores (0 when W_K = W_Q); at the last position, per head and over heads:
  attention on itself and on the target, P(own score >= target's), and
  ||k_target|| / ||k_self||."""
  ev = m.eval_batch(m.config.eval_batch_size)
  loss, task_metrics, captured = m.forward(ev)
  out = {"eval_loss": loss, "eval_accuracy": task_metrics["accuracy"],
         "uniform_attn/accuracy": m.forward(ev, attn_scale=0.0)[1]["accuracy"]}
  is_target_BxS = jnp.arange(ev.tokens_BxT.shape[1])[None, :] == ev.target_pos_B[:, None]
  on_target = lambda x_BxHxS: jnp.sum(jnp.where(is_target_BxS[:, None], x_BxHxS, 0.0), -1)
  for site, tr in captured.attention.items():
    s_BxHxTxS = tr.logits_BxHxTxS
    out[f"score_asym/{site}"] = (jnp.linalg.norm(s_BxHxTxS - jnp.swapaxes(s_BxHxTxS, -1, -2))
                                 / (jnp.linalg.norm(s_BxHxTxS) + 1e-12))
    w_BxHxS, z_BxHxS = tr.weights_BxHxTxS[:, :, -1], s_BxHxTxS[:, :, -1]
    k_norm_BxSxH = jnp.linalg.norm(tr.key_BxSxHxD, axis=-1)
    per_head_BxH = {
        "attn_self": w_BxHxS[:, :, -1], "attn_target": on_target(w_BxHxS),
        "self_ge_target": z_BxHxS[:, :, -1] >= on_target(z_BxHxS),
        "key_norm_ratio": (base.at_position(k_norm_BxSxH, ev.target_pos_B)
                           / (k_norm_BxSxH[:, -1] + 1e-12))}
    for name, v_BxH in per_head_BxH.items():
      v_H = jnp.mean(v_BxH, 0)
      out.update({f"{name}/{site}/H{h}": v_H[h] for h in range(v_H.shape[0])})
      out[f"{name}/{site}/{HEADS[name]}"] = (jnp.max if HEADS[name] == "best" else jnp.mean)(v_H)
  return out


# ---- analysis (from the saved run) ----------------------------------------------------
def censor(run) -> int:
  """The steps a seed that never reaches the threshold counts as."""
  return run.config.steps + run.config.log_every


def reach(run, cond: str) -> np.ndarray:
  """Per seed, steps to the threshold (``censor`` if never reached)."""
  steps, acc = run.table("eval_accuracy", condition=cond)
  return stats.steps_to_threshold(steps, acc, run.config.threshold, censor(run))


def slowdown(run, task: str, mode: str) -> np.ndarray:
  """Per seed, log2(steps to threshold with ``mode`` / with separate matrices)."""
  return np.log2(reach(run, f"{task}/{mode}") / reach(run, f"{task}/none"))


def over_heads(run, name: str, cond: str) -> np.ndarray:
  """[seeds, steps] of ``name`` over the heads of the last layer (``HEADS``)."""
  return run.table(f"{name}/L{run.config.model.n_layers - 1}/{HEADS[name]}", condition=cond)[1]


def bar(run, task: str) -> float:
  return run.file("task.json")[task][TASKS[task][1]]


def claims(run) -> list[Claim]:
  c, out = run.config, []
  if "none" not in c.conditions:
    return out
  modes = [m for m in c.conditions if m != "none"]
  tied = [m for m in modes if m in ("qk", "qkv")]
  slow_text = f"config.speed_margin, a slow-down of ×{2 ** c.speed_margin:.2f}"
  acc = lambda r, t, mode: r.final("eval_accuracy", condition=f"{t}/{mode}")
  own = lambda r, t, mode: over_heads(r, "attn_self", f"{t}/{mode}")[:, -1]
  for t in c.tasks:
    out.append(Claim(
        f"prerequisite: separate W_Q, W_K, W_V learn the {t} task",
        "(not a claim; comparisons mean little if the baseline fails)", "qkvjax",
        f"{t}: final eval accuracy minus the best accuracy from the last token alone "
        f"({bar(run, t):.3f}); smallest effect of interest 0.05, as for every prerequisite",
        lambda r, t=t: acc(r, t, "none") - bar(r, t), stats.Greater(0.0, 0.05)))
    for mode in modes:
      quote = ((QUOTE_SEPARATE, "qkv_mechanism") if mode in tied
               else (QUOTE_INDEPENDENT, "division_of_labor"))
      out += [Claim(
          f"{PLAIN[mode]} learns the {t} task more slowly", *quote,
          f"{t}: log2(steps to {c.threshold:.0%} eval accuracy with {PLAIN[mode]} / with "
          "separate matrices), paired by seed; never reached counts as "
          f"{censor(run)} steps; smallest effect of interest: {slow_text}",
          lambda r, t=t, mode=mode: slowdown(r, t, mode), stats.Greater(0.0, c.speed_margin)),
              Claim(
          f"{PLAIN[mode]} ends less accurate on the {t} task", *quote,
          f"{t}: eval accuracy after {c.steps} steps with separate matrices minus with "
          f"{PLAIN[mode]}, paired by seed; smallest effect of interest: config.acc_margin, "
          "the accuracy a cost must exceed to matter",
          lambda r, t=t, mode=mode: acc(r, t, "none") - acc(r, t, mode),
          stats.Greater(0.0, c.acc_margin))]
    out += [Claim(
        f"{PLAIN[mode]} makes the prediction position attend to itself ({t})", QUOTE_SELF,
        "qkvjax", f"{t}: attention share of the last position on itself (mean over heads, "
        f"last layer) at the end, {PLAIN[mode]} minus separate; smallest effect of interest "
        "0.1, a tenth of the attention",
        lambda r, t=t, mode=mode: own(r, t, mode) - own(r, t, "none"),
        stats.Greater(0.0, 0.1)) for mode in tied]
  if {"selection", "match"} <= set(c.tasks):
    out += [Claim(
        f"{PLAIN[mode]} costs less when the relation is symmetric", QUOTE_SEPARATE,
        "qkv_mechanism", "slow-down log2(steps ratio to separate matrices) on the selection "
        "task minus on the match task, paired by seed (> 0: tying hurts the asymmetric "
        f"relation more); smallest effect of interest: {slow_text}",
        lambda r, mode=mode: slowdown(r, "selection", mode) - slowdown(r, "match", mode),
        stats.Greater(0.0, c.speed_margin)) for mode in tied]
  return out


def summary(run) -> dict:
  steps = {c: {**stats.describe(v), "per_seed": v, "reached": int(np.sum(v < censor(run)))}
           for c, v in ((c, reach(run, c)) for c in run.conditions)}
  return {"threshold": run.config.threshold, "steps_to_threshold": steps,
          "last_token_only_accuracy": {t: bar(run, t) for t in run.config.tasks}}


# ---- figures and report (from the saved run) ------------------------------------------
def groups(run) -> dict[str, dict[str, str]]:
  """Figure columns: per task, the condition of each mode."""
  return {TASKS[t][0]: {m: f"{t}/{m}" for m in run.config.conditions} for t in run.config.tasks}


def accuracy_figure(run):
  fig = plotting.band_grid(run, [("eval accuracy", "eval_accuracy")], groups(run), COLORS,
                           LABELS, height=2.7, width=4.2)
  for ax, t in zip(fig.axes, run.config.tasks):
    ax.axhline(run.config.threshold, color="0.5", ls="--", lw=1, label="threshold")
    ax.axhline(bar(run, t), color="0.5", ls=":", lw=1, label="last token alone")
    ax.set_ylim(0, 1.02)
  ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  return fig


def self_attention_figure(run):
  panels = {"attn_self": "attention on itself", "attn_target": "attention on the target",
            "self_ge_target": "P(own score >= target's)",
            "key_norm_ratio": "||k_target|| / ||k_self||"}
  fig = plotting.band_grid(run, [(f"{label}\n({HEADS[k]} over heads)", lambda c, k=k: over_heads(
      run, k, c)) for k, label in panels.items()], groups(run), COLORS, LABELS, 2.1, 4.2)
  fig.suptitle(f"At the prediction position (layer {run.config.model.n_layers - 1}), "
               "eval batch", y=1.01)
  return fig


def outcome_figure(run):
  fig = plotting.dots_grid([
      (f"steps to {run.config.threshold:.0%} eval accuracy\n(hollow, dotted line: not "
       "reached)", lambda c: reach(run, c)),
      ("final eval accuracy", lambda c: run.final("eval_accuracy", condition=c))],
                           groups(run), COLORS, LABELS, censor(run), width=4.2)
  n = len(run.config.tasks)
  for ax in fig.axes[:n]:
    ax.axhline(censor(run), color="0.5", ls=":", lw=1)
  for ax in fig.axes[n:2 * n]:
    ax.set_ylim(0, 1.02)
  return fig


def score_figure(run, samples, what: str):
  """Rows: tasks; columns: mode x head (last layer); one sample sequence each."""
  rows = {t: {LABELS[m]: f"{t}/{m}" for m in run.config.conditions} for t in run.config.tasks}
  vocab = {c: run.file("task.json")[c.split("/")[0]]["vocab"] for c in run.conditions}
  seeds = ", ".join(map(str, sorted({s["seed"] for s in samples.values()})))
  text = {"logits": "scores (scaled q.k, before the causal mask; symmetric when W_K = W_Q)",
          "weights": "attention weights"}[what]
  return plotting.sample_grid(
      samples, rows, vocab, f"L{run.config.model.n_layers - 1}", what,
      f"Last layer {text} on one sample per task (seed {seeds}); red box: prediction "
      "position -> target")


def figures(run) -> list[Figure]:
  samples = run.file("samples.json")
  return [Figure("Eval accuracy during training", "accuracy", accuracy_figure),
          Figure("Steps to threshold and final accuracy, per seed", "outcomes", outcome_figure),
          Figure("What W_K = W_Q does at the prediction position", "self_attention",
                 self_attention_figure)] + [
              Figure(f"{title} on a sample sequence", name,
                     lambda r, what=what: score_figure(r, samples, what))
              for title, name, what in (("Score matrices", "score_matrices", "logits"),
                                        ("Attention weights", "attention_maps", "weights"))
              if samples]


def describe(run) -> str:
  c = run.config
  return ("Modes: " + "; ".join(f"`{m}` = {PLAIN[m]}" for m in c.conditions) + ". Tasks "
          "(`task.json`): " + "; ".join(TASKS[t][0].replace("\n", " ") for t in c.tasks)
          + f". Accuracy is measured on one fixed eval batch of {c.eval_batch_size} sequences. "
          "Seed i of every condition shares its data stream and initial W_Q, so conditions "
          "are compared seed by seed.")


def sections(run, summ) -> list[str]:
  last = f"L{run.config.model.n_layers - 1}"
  cols = {"accuracy with uniform attention": "uniform_attn/accuracy",
          "self-attention at init → end": f"attn_self/{last}/mean",
          "target attention (best head)": f"attn_target/{last}/best",
          "P(own score ≥ target's)": f"self_ge_target/{last}/mean",
          "‖k_target‖/‖k_self‖": f"key_norm_ratio/{last}/mean",
          "score asymmetry": f"score_asym/{last}"}
  rows = []
  for cond in run.conditions:
    steps, final = summ["steps_to_threshold"][cond], summ["final"][cond]
    cells = [report.fmt(final[k]["mean"]) for k in cols.values()]
    at_init = np.nanmean(run.initial(f"attn_self/{last}/mean", condition=cond))
    cells[1] = f"{report.fmt(at_init)} → {cells[1]}"
    rows.append([cond, report.effect_cell(final["eval_accuracy"]),
                 f"{report.effect_cell(steps)} ({steps['reached']}/{steps['n']})", *cells])
  return ["## Per condition (final values)", ""] + report.table(
      ["condition", "eval accuracy", "steps to threshold (reached)", *cols], rows) + [
          "", "Best accuracy from the last token alone: " + ", ".join(
              f"{t} {v:.3f}" for t, v in summ["last_token_only_accuracy"].items()) + ". "
          "Uniform attention: scores times 0 (values kept), so what is left needs no "
          "selection. Attention columns: at the prediction (last) position of the last "
          "layer, on the eval batch. Score asymmetry: ‖S − Sᵀ‖/‖S‖ of the full (pre-mask) "
          "scores, 0 when W_K = W_Q.", ""]


STUDY = study.Study(
    name="tied", title="qkvjax `tied`: must Q, K and V come from three independent matrices?",
    task="selection", conditions=conditions, metrics=(eval_metrics,), claims=claims,
    figures=figures, describe=describe, validate=validate, compile_options=train.FAST_COMPILE,
    samples=study.attention_samples, sections=sections, summary=summary)

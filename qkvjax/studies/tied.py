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
from qkvjax.study import Claim, Figure
from qkvjax.tasks import base

plt = plotting.plt
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
# Measured on 2 CPU cores: one-shot init and measure compile at level 0 (6 s -> 1 s, 5.7 s ->
# 1.6 s), chunks at level 1 (7.2 s -> 3.9 s), each running as fast as at the default.
COMPILE = {k: {"xla_backend_optimization_level": v}
           for k, v in (("init", 0), ("measure", 0), ("chunk", 1))}


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
def steps_to_threshold(steps: np.ndarray, acc_SxN: np.ndarray, threshold: float,
                       censor: float) -> np.ndarray:
  """Per seed, the first logged step whose accuracy is >= ``threshold``;
  ``censor`` if never reached, NaN if the seed diverged before reaching it."""
  hit_SxN = acc_SxN >= threshold
  first = np.where(hit_SxN.any(1), steps[np.argmax(hit_SxN, 1)], censor)
  return np.where(hit_SxN.any(1) | np.isfinite(acc_SxN).all(1), first, np.nan)


def reach(run, cond: str) -> np.ndarray:
  """Per seed, steps to the threshold; never reached counts as steps + log_every."""
  steps, acc = run.table("eval_accuracy", condition=cond)
  return steps_to_threshold(steps, acc, run.config.threshold,
                            run.config.steps + run.config.log_every)


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
          f"{c.steps + c.log_every} steps; smallest effect of interest: {slow_text}",
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
  censor = run.config.steps + run.config.log_every
  steps = {c: {**stats.describe(v), "per_seed": v, "reached": int(np.sum(v < censor))}
           for c, v in ((c, reach(run, c)) for c in run.conditions)}
  return {"threshold": run.config.threshold, "steps_to_threshold": steps,
          "last_token_only_accuracy": {t: bar(run, t) for t in run.config.tasks}}


# ---- figures and report (from the saved run) ------------------------------------------
def bands_figure(run, panels, height: float):
  """Columns: tasks; rows: ``panels`` (ylabel, cond -> [seeds, steps]); a band per mode."""
  tasks = run.config.tasks
  fig, axes = plt.subplots(len(panels), len(tasks), squeeze=False, sharex=True,
                           figsize=(4.2 * len(tasks), height * len(panels)))
  for j, t in enumerate(tasks):
    axes[0][j].set_title(TASKS[t][0])
    for i, (ylabel, values) in enumerate(panels):
      for mode in run.config.conditions:
        steps = run.table("loss", condition=f"{t}/{mode}")[0]
        n = plotting.band(axes[i][j], steps, values(f"{t}/{mode}"), COLORS[mode], LABELS[mode])
      axes[i][0].set_ylabel(ylabel)
    axes[-1][j].set_xlabel("step")
  axes[0][-1].legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  fig.tight_layout()
  plotting.seed_note(fig, n)
  return fig


def accuracy_figure(run):
  fig = bands_figure(run, [("eval accuracy", lambda c: run.table(
      "eval_accuracy", condition=c)[1])], 2.7)
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
  fig = bands_figure(run, [(f"{label}\n({HEADS[k]} over heads)", lambda c, k=k: over_heads(
      run, k, c)) for k, label in panels.items()], 2.1)
  fig.suptitle(f"At the prediction position (layer {run.config.model.n_layers - 1}), "
               "eval batch", y=1.01)
  return fig


def outcome_figure(run):
  tasks, censor = run.config.tasks, run.config.steps + run.config.log_every
  fig, axes = plt.subplots(2, len(tasks), squeeze=False, figsize=(4.2 * len(tasks), 5.2))
  for j, t in enumerate(tasks):
    axes[0][j].set_title(TASKS[t][0])
    conds = {m: f"{t}/{m}" for m in run.config.conditions}
    plotting.per_seed_dots(axes[0][j], {m: reach(run, c) for m, c in conds.items()}, COLORS,
                           LABELS, censor)
    axes[0][j].axhline(censor, color="0.5", ls=":", lw=1)
    plotting.per_seed_dots(axes[1][j], {m: run.final("eval_accuracy", condition=c)
                                        for m, c in conds.items()}, COLORS, LABELS)
    axes[1][j].set_ylim(0, 1.02)
  axes[0][0].set_ylabel(f"steps to {run.config.threshold:.0%} eval accuracy\n"
                        "(hollow, dotted line: not reached)")
  axes[1][0].set_ylabel("final eval accuracy")
  fig.tight_layout()
  plotting.seed_note(fig, run.config.num_seeds, "dots: seeds")
  return fig


def score_figure(run, samples, what: str):
  """Rows: tasks; columns: mode x head (last layer); one sample sequence each."""
  modes, h, rows = run.config.conditions, run.config.model.n_heads, len(run.config.tasks)
  fig, axes = plt.subplots(rows, len(modes) * h, squeeze=False,
                           figsize=(1.9 * len(modes) * h, 2.7 * rows + 0.5))
  for i, t in enumerate(run.config.tasks):
    for j, mode in enumerate(modes):
      s = samples[f"{t}/{mode}"]
      tokens = [run.file("task.json")[t]["vocab"][x] for x in s["inputs"][0]]
      plotting.attention_maps(s["sites"][f"L{run.config.model.n_layers - 1}"][what], tokens,
                              tokens, axes[i][j * h:(j + 1) * h],
                              [f"{t}\n{LABELS[mode]}, head {k}" for k in range(h)],
                              (len(tokens) - 1, s["ground_truth"]["target_pos_B"]),
                              signed=what == "logits")
  text = {"logits": "scores (scaled q.k, before the causal mask; symmetric when W_K = W_Q)",
          "weights": "attention weights"}[what]
  fig.suptitle(f"Last layer {text} on one sample per task (seed {s['seed']}); red box: "
               "prediction position -> target", fontsize=8, y=1.0)
  fig.tight_layout()
  return fig


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
  cols_init = cols["self-attention at init → end"]
  lines = ["## Per condition (final values)", "", "| condition | eval accuracy | steps to "
           "threshold (reached) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 3) + "|"]
  for cond in run.conditions:
    steps, final = summ["steps_to_threshold"][cond], summ["final"][cond]
    cells = [report.fmt(final[k]["mean"]) for k in cols.values()]
    cells[1] = f"{report.fmt(np.nanmean(run.initial(cols_init, condition=cond)))} → {cells[1]}"
    lines.append(f"| {cond} | {report.effect_cell(final['eval_accuracy'])} | "
                 f"{report.effect_cell(steps)} ({steps['reached']}/{steps['n']}) | "
                 + " | ".join(cells) + " |")
  return lines + ["", "Best accuracy from the last token alone: " + ", ".join(
      f"{t} {v:.3f}" for t, v in summ["last_token_only_accuracy"].items()) + ". Uniform "
      "attention: scores times 0 (values kept), so what is left needs no selection. Attention "
      "columns: at the prediction (last) position of the last layer, on the eval batch. Score "
      "asymmetry: ‖S − Sᵀ‖/‖S‖ of the full (pre-mask) scores, 0 when W_K = W_Q.", ""]


STUDY = study.Study(
    name="tied", title="qkvjax `tied`: must Q, K and V come from three independent matrices?",
    task="selection", conditions=conditions, metrics=(eval_metrics,), claims=claims,
    figures=figures, describe=describe, validate=validate, compile_options=COMPILE,
    samples=study.attention_samples, sections=sections, summary=summary)

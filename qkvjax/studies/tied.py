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

import numpy as np

from qkvjax import effects
from qkvjax import claim_kinds
from qkvjax import config as config_lib
from qkvjax import figure_kinds
from qkvjax import metrics
from qkvjax import plotting
from qkvjax import report
from qkvjax import stats
from qkvjax import study
from qkvjax import train
from qkvjax.figure_kinds import BandRow, DotRow, Ref
from qkvjax.study import Claim, Figure

MODES = {m: {"model.tie": tie, "model.value_proj": v} for m, tie, v in (  # each tie mode's
    ("none", "none", True), ("qk", "qk", True), ("qkv", "qkv", True), ("no_value", "none", False))}
PLAIN = {"none": "separate W_Q, W_K, W_V", "qk": "W_K = W_Q", "qkv": "W_Q = W_K = W_V",
         "no_value": "no W_V (V = layer input)"}
LABELS = {m: re.sub(r"(W_[QKV])", r"$\1$", p) for m, p in PLAIN.items()}  # for figures
COLORS = {"none": "k", "qk": plotting.MATRIX_COLORS["key"],
          "qkv": plotting.MATRIX_COLORS["value"], "no_value": plotting.MATRIX_COLORS["out"]}
TASKS = {  # title; the bar for "learned": the best accuracy from the last token alone
    "selection": ("selection: verb -> the noun it selects\n(asymmetric)", "verb_only_accuracy"),
    "match": ("match: probe noun -> the noun of its category\n(symmetric)",
              "probe_only_accuracy")}
QUOTE_SEPARATE = ("This separation enables more expressive attention patterns than "
                  "using the same representation for all three roles.")
QUOTE_SELF = ("(consequence of W_K = W_Q: symmetric scores, and a token scores itself "
              "at least as high as any key of no larger norm)")


def conditions(config) -> dict[str, dict]:
  return {f"{t}/{m}": {"task": t, **MODES[m]} for t in config.tasks for m in config.conditions}


def validate(c) -> None:
  config_lib.validate_common(c)
  config_lib.require_names(c, "conditions", MODES)
  config_lib.require_names(c, "tasks", TASKS)
  config_lib.require_per_condition(c, {"model.tie": "none", "model.value_proj": True},
                                   "variants with config.conditions")
  config_lib.require(0 < c.threshold <= 1, "threshold", c.threshold, "0 < threshold <= 1")
  config_lib.require_at_least(c, ("eval_batch_size",))
  config_lib.require_at_least(c, ("acc_margin", "speed_margin"), 0)


# ---- analysis (from the saved run) ----------------------------------------------------
def reach(run, cond: str) -> np.ndarray:
  """Per seed, steps to the threshold (``effects.censor`` if never reached)."""
  return effects.steps_to(run, "eval_accuracy", run.config.threshold, condition=cond)


def bar(run, task: str) -> float:
  return run.file("task.json")[task][TASKS[task][1]]


def claims(run) -> list[Claim]:
  c, out = run.config, []
  if "none" not in c.conditions:
    return out
  modes = [m for m in c.conditions if m != "none"]
  tied = [m for m in modes if m in ("qk", "qkv")]
  own = lambda r, t, mode: effects.over_heads(r, "attn_self", condition=f"{t}/{mode}")[:, -1]
  slowdown = lambda r, t, mode: effects.slowdown(  # log2 ratio of steps to separate matrices
      r, "eval_accuracy", c.threshold, f"{t}/{mode}", f"{t}/none")
  for t in c.tasks:
    out.append(claim_kinds.prerequisite(
        f"separate W_Q, W_K, W_V learn the {t} task",
        f"{t}: final eval accuracy minus the best accuracy from the last token alone "
        f"({bar(run, t):.3f}); smallest effect of interest 0.05, as for every prerequisite",
        claim_kinds.final_above("eval_accuracy", bar(run, t), condition=f"{t}/none"),
        why="comparisons mean little if the baseline fails"))
    for mode in modes:
      quote = ((QUOTE_SEPARATE, "qkv_mechanism") if mode in tied
               else (claim_kinds.QUOTE_INDEPENDENT, "division_of_labor"))
      out += claim_kinds.costs(PLAIN[mode], t, "separate matrices", quote, run, f"{t}/{mode}",
                               f"{t}/none", c.threshold, c.speed_margin, c.acc_margin)
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
        f"relation more); smallest effect of interest: config.speed_margin, a slow-down of "
        f"×{2 ** c.speed_margin:.2f}",
        lambda r, mode=mode: slowdown(r, "selection", mode) - slowdown(r, "match", mode),
        stats.Greater(0.0, c.speed_margin)) for mode in tied]
  return out


def summary(run) -> dict:
  steps = {c: effects.steps_summary(reach(run, c), effects.censor(run))
           for c in run.conditions}
  return {"threshold": run.config.threshold, "steps_to_threshold": steps,
          "last_token_only_accuracy": {t: bar(run, t) for t in run.config.tasks}}


# ---- figures and report (from the saved run) ------------------------------------------
def groups(run) -> dict[str, dict[str, str]]:
  """Figure columns: per task, the condition of each mode."""
  return {TASKS[t][0]: {m: f"{t}/{m}" for m in run.config.conditions} for t in run.config.tasks}


SELF_PANELS = {"attn_self": "attention on itself", "attn_target": "attention on the target",
               "self_ge_target": "P(own score >= target's)",
               "key_norm_ratio": "||k_target|| / ||k_self||"}


def figures(run) -> list[Figure]:
  c = run.config
  return [
      figure_kinds.bands(
          "Eval accuracy during training", "accuracy", lambda r: [BandRow(
              "eval accuracy", "eval_accuracy", lambda j: [
                  Ref(c.threshold, "threshold", "--"),
                  Ref(bar(r, c.tasks[j]), "last token alone")], (0, 1.02))],
          groups, COLORS, LABELS, height=2.7, width=4.2),
      figure_kinds.dots(
          "Steps to threshold and final accuracy, per seed", "outcomes", lambda r: [
              DotRow(f"steps to {c.threshold:.0%} eval accuracy\n(hollow, dotted line: not "
                     "reached)", lambda cond: reach(r, cond), [Ref(effects.censor(r))]),
              DotRow("final eval accuracy", lambda cond: r.final("eval_accuracy",
                                                                 condition=cond),
                     ylim=(0, 1.02))], groups, COLORS, LABELS, effects.censor, width=4.2),
      figure_kinds.bands(
          "What W_K = W_Q does at the prediction position", "self_attention", lambda r: [
              BandRow(f"{label}\n({metrics.attention.OVER_HEADS[k]} over heads)",
                      lambda cond, k=k: effects.over_heads(r, k, condition=cond))
              for k, label in SELF_PANELS.items()], groups, COLORS, LABELS,
          lambda r: f"At the prediction position (layer {c.model.n_layers - 1}), eval batch",
          height=2.1, width=4.2),
      *figure_kinds.sample_maps(
          run, {t: {LABELS[m]: f"{t}/{m}" for m in c.conditions} for t in c.tasks},
          {cond: t["vocab"] for cond, t in effects.task_tables(run).items()},
          f"L{c.model.n_layers - 1}", "Last layer {what} on one sample per task (seed {seeds}); "
          "red box: prediction position -> target",
          "scores (scaled q.k, before the causal mask; symmetric when W_K = W_Q)")]


def describe(run) -> str:
  c = run.config
  return ("Modes: " + "; ".join(f"`{m}` = {PLAIN[m]}" for m in c.conditions) + ". Tasks "
          "(`task.json`): " + "; ".join(TASKS[t][0].replace("\n", " ") for t in c.tasks)
          + f". Accuracy is measured on one fixed eval batch of {c.eval_batch_size} sequences. "
          "Seed i of every condition shares its data stream and initial W_Q, so conditions "
          "are compared seed by seed.")


def sections(run, summ) -> list[str]:
  last = f"L{run.config.model.n_layers - 1}"
  steps, final = summ["steps_to_threshold"], summ["final"]
  mean = lambda key: lambda cond: report.fmt(final[cond][key]["mean"])
  init = lambda c: report.fmt(np.nanmean(run.initial(f"attn_self/{last}/mean", condition=c)))
  return ["## Per condition (final values)", ""] + report.spec_table({
      "condition": str, "eval accuracy": lambda c: report.effect_cell(final[c]["eval_accuracy"]),
      "steps to threshold (reached)": lambda c: (
          f"{report.effect_cell(steps[c])} ({steps[c]['reached']}/{steps[c]['n']})"),
      "accuracy with uniform attention": mean("uniform_attn/accuracy"),
      "self-attention at init → end": lambda c: (
          f"{init(c)} → {mean(f'attn_self/{last}/mean')(c)}"),
      "target attention (best head)": mean(f"attn_target/{last}/best"),
      "P(own score ≥ target's)": mean(f"self_ge_target/{last}/mean"),
      "‖k_target‖/‖k_self‖": mean(f"key_norm_ratio/{last}/mean"),
      "score asymmetry": mean(f"score_asym/{last}")}, run.conditions) + [
          "", "Best accuracy from the last token alone: " + ", ".join(
              f"{t} {v:.3f}" for t, v in summ["last_token_only_accuracy"].items()) + ". "
          "Uniform attention: scores times 0 (values kept), so what is left needs no "
          "selection. Attention columns: at the prediction (last) position of the last "
          "layer, on the eval batch. Score asymmetry: ‖S − Sᵀ‖/‖S‖ of the full (pre-mask) "
          "scores, 0 when W_K = W_Q.", ""]


STUDY = study.Study(
    name="tied", title="qkvjax `tied`: must Q, K and V come from three independent matrices?",
    task="selection", conditions=conditions, metrics=(metrics.prediction_attention,), claims=claims,
    figures=figures, describe=describe, validate=validate, compile_options=train.FAST_COMPILE,
    samples=study.attention_samples, sections=sections, summary=summary)

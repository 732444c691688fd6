"""`heads`: do the heads of multi-head attention specialize to different relations?

The two-relation task asks the final position for the colour of the noun the
verb selects (relation ``select``) and the manner of the adverb just before
the verb (``prev``). One condition (program) per head count. Per head h and
relation r, on a fixed eval batch: ``share/r/L/H`` (the final position's
attention on r's target) and ``ablation/r/L/H`` (r's loss increase when h
alone is removed, its W_O slice zeroed). From these, per seed, the separation
index 1 - sum_h min(p_select(h), p_prev(h)) of the profiles normalized over
heads: 0 when every head serves both alike (always, with one head), 1 when no
head serves both.
"""

from __future__ import annotations

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
from qkvjax.metrics.heads import head_roles, modal_pattern, profile_stats
from qkvjax.study import Claim, Figure
from qkvjax.tasks.relations import CHANCE_KEYS, RELATION_TEXT, RELATIONS

HEAD_BUDGETS = ("total", "per_head")
QUOTE = ("Different attention heads form a \"division of labor\" ... like having a team "
         "of detectives investigating different directions")


def conditions(config) -> dict[str, dict]:
  """Per head count ("2 heads"): n_heads, and d_head = d_model / n_heads under
  the "total" budget."""
  return {f"{n} head{'s' * (n > 1)}": {"model.n_heads": n, **(
      {"model.d_head": config.model.d_model // n} if config.head_budget == "total" else {})}
          for n in config.n_heads_list}


def validate(c) -> None:
  config_lib.validate_common(c)
  heads = config_lib.require_values(c, "n_heads_list", lambda n: isinstance(n, int) and n >= 1,
                                    "distinct integers >= 1, e.g. 1,2,4,8")
  config_lib.require_choice(c, "head_budget", HEAD_BUDGETS)
  config_lib.require_per_condition(c, {"model.n_heads": 1},
                                   "head counts with config.n_heads_list")
  config_lib.require(c.head_budget != "total" or all(c.model.d_model % h == 0 for h in heads),
                     "n_heads_list", heads, "with head_budget='total', divisors of "
                     f"config.model.d_model={c.model.d_model}")
  config_lib.require_at_least(c, ("eval_batch_size",))
  config_lib.require(0 < c.separation_threshold < 1, "separation_threshold",
                     c.separation_threshold, "0 < threshold < 1")


# ---- analysis (from the saved run) ----------------------------------------------------
def n_heads(run, cond: str) -> int:
  return run.conditions[cond]["model.n_heads"]


def head_matrix(run, prefix: str, cond: str, index: int) -> np.ndarray:
  """[seeds, layers * heads, relations] of ``prefix/<relation>/L<l>/H<h>``."""
  return effects.head_table(run, prefix, RELATIONS, n_heads(run, cond), index, condition=cond)


def chance(run) -> dict[str, float]:
  """Per relation, the best accuracy without attention (``CHANCE_KEYS``)."""
  return {r: run.file("task.json")["two_relations"][k] for r, k in CHANCE_KEYS.items()}


def per_seed(run, cond: str) -> dict[str, np.ndarray]:
  """Per seed, at the end: what the claims, table and figures use."""
  acc = {r: run.final(f"eval_accuracy/{r}", condition=cond) for r in RELATIONS}
  return {"acc_select": acc["select"], "acc_prev": acc["prev"],
          "acc_over_chance_min": np.minimum(*(acc[r] - chance(run)[r] for r in RELATIONS)),
          **profile_stats(*(head_matrix(run, p, cond, i) for p, i in (
              ("share", -1), ("share", 0), ("ablation", -1))))}


def claims(run) -> list[Claim]:
  out = [claim_kinds.prerequisite(
      f"the model with {cond} learns both relations",
      f"{cond}: final eval accuracy minus the best accuracy without attention (verb-only "
      "for select, most common manner for prev), the smaller over the two relations; "
      "smallest effect of interest 0.05, as for every prerequisite",
      lambda r, cond=cond: per_seed(r, cond)["acc_over_chance_min"],
      why="head roles mean little if the task is not learned") for cond in run.conditions]
  thr = run.config.separation_threshold
  for cond in (c for c in run.conditions if n_heads(run, c) >= 2):
    for key, what in (("separation_attn", "attention share"),
                      ("separation_ablation", "ablation damage")):
      out.append(Claim(
          f"{cond} divide the two relations between them ({what})", QUOTE, "division_of_labor",
          f"{cond}, end: separation index 1 - Σ_h min(p_select(h), p_prev(h)) of each "
          f"relation's {what} normalized over heads (0: every head serves both alike, 1: no "
          f"head serves both), above config.separation_threshold; smallest effect of "
          "interest 0.1 beyond it: a separation within 0.1 of the threshold is no clear split",
          lambda r, cond=cond, key=key: per_seed(r, cond)[key], stats.Greater(thr, 0.1)))
    out.append(Claim(
        f"{cond}: the split recurs across seeds", QUOTE, "division_of_labor",
        f"{cond}: fraction of seeds in which the head whose ablation hurts `select` most "
        "differs from the one that hurts `prev` most, above one half; smallest effect of "
        "interest 0.25 beyond it: a split in fewer than three seeds of four is no rule",
        lambda r, cond=cond: per_seed(r, cond)["distinct_top_heads"], stats.Greater(0.5, 0.25)))
  return out


def summary(run) -> dict:
  out = {}
  for cond in run.conditions:
    damage = head_matrix(run, "ablation", cond, -1)
    patterns = head_roles(damage)
    modal, fraction = modal_pattern(patterns)
    out[cond] = {**{k: {**stats.describe(v), "per_seed": v}
                    for k, v in per_seed(run, cond).items()},
                 "n_heads": n_heads(run, cond),
                 "d_head": run.conditions[cond].get("model.d_head", run.config.model.d_head),
                 "patterns": patterns, "modal_pattern": modal,
                 "modal_fraction": fraction,
                 "share_SxKxR": head_matrix(run, "share", cond, -1), "ablation_SxKxR": damage}
  return {"head_budget": run.config.head_budget, "chance": chance(run), "heads": out}


# ---- figures and report (from the saved run) ------------------------------------------
SEPARATION_PANELS = {"separation_attn": "separation index\n(attention share)",
                     "separation_ablation": "separation index\n(ablation damage)",
                     "n_eff_select": "effective heads\ncarrying select",
                     "n_eff_prev": "effective heads\ncarrying prev"}


def figures(run) -> list[Figure]:
  colors = plotting.condition_colors(list(run.conditions))
  one_column = lambda title: lambda r: {title: {c: c for c in r.conditions}}
  at_end = lambda r, prefix: {c: head_matrix(r, prefix, c, -1) for c in r.conditions}
  return [
      figure_kinds.bands(
          "Eval accuracy of each relation during training", "accuracy", lambda r: [BandRow(
              "eval accuracy", f"eval_accuracy/{rel}", lambda j, rel=rel: [
                  Ref(chance(r)[rel], "best without attention")], (0, 1.02), RELATION_TEXT[rel])
              for rel in RELATIONS], one_column(""), colors, height=2.6, width=4.4),
      Figure("Head × relation: attention share of the final position, per seed",
             "heatmap_attention", lambda r: plotting.seed_heatmaps(
                 at_end(r, "share"), RELATIONS, "Attention share of the final position on each "
                 "relation's target (rows: heads; end of training)", "Blues", 1.0)),
      Figure("Head × relation: loss increase when the head alone is ablated, per seed",
             "heatmap_ablation", lambda r: plotting.seed_heatmaps(
                 at_end(r, "ablation"), RELATIONS, "Loss increase of each relation (nats) when "
                 "the head alone is ablated (end of training; colour scale per head count)",
                 "Reds")),
      figure_kinds.dots(
          "Separation index and effective heads per relation", "separation", lambda r: [
              DotRow(label, lambda c, k=k: per_seed(r, c)[k], [Ref(
                  r.config.separation_threshold, None, "--")] if k.startswith("sep") else (),
                     (-0.02, 1.02) if k.startswith("sep") else None)
              for k, label in SEPARATION_PANELS.items()],
          one_column("At the end, per seed (dots) and mean ± 1 std; dashed: threshold"),
          colors, height=2.2, width=4.4)]


def describe(run) -> str:
  c = run.config
  return ("Budget: " + (f"n_heads × d_head = d_model = {c.model.d_model}" if c.head_budget
                        == "total" else f"d_head = {c.model.d_head}") + ". Task (`task.json`): "
          "nouns of distinct categories, an adverb, then a verb; at the verb the model answers "
          "both relations, each from its own output tokens with its own cross-entropy: "
          + "; ".join(RELATION_TEXT.values()) + f". Measured on one fixed eval batch of "
          f"{c.eval_batch_size} sequences.")


def sections(run, summ) -> list[str]:
  heads, ch = summ["heads"], summ["chance"]
  f = lambda c, k: report.fmt(heads[c][k]["mean"])
  top = lambda t: "n/a" if t["mean"] is None else f"{round(t['mean'] * t['n'])}/{t['n']}"
  return ["## Per head count (final values)", ""] + report.spec_table({
      "heads": str, "d_head": lambda c: heads[c]["d_head"],
      "accuracy select": lambda c: report.effect_cell(heads[c]["acc_select"]),
      "accuracy prev": lambda c: report.effect_cell(heads[c]["acc_prev"]),
      "separation (attention) at init → end": lambda c: (
          f"{f(c, 'separation_attn_init')} → {f(c, 'separation_attn')}"),
      "separation (ablation)": lambda c: report.effect_cell(heads[c]["separation_ablation"]),
      "distinct top heads": lambda c: top(heads[c]["distinct_top_heads"]),
      "effective heads select / prev": lambda c: f"{f(c, 'n_eff_select')} / {f(c, 'n_eff_prev')}",
      "modal assignment (share of seeds)": lambda c: "n/a" if heads[c]["modal_pattern"] is None
      else f"{heads[c]['modal_pattern']} ({heads[c]['modal_fraction']:.0%})"}, heads) + [
           "", f"Best accuracy without attention: select {ch['select']:.3f} (the verb alone), "
           f"prev {ch['prev']:.3f} (most common manner). Assignment: a head takes a relation "
           "when its share of that relation's ablation damage is at least its uniform share "
           "1/heads; every seed's pattern is in `summary.json`.", ""]


STUDY = study.Study(
    name="heads", title="qkvjax `heads`: do attention heads specialize to different relations?",
    task="two_relations", conditions=conditions, metrics=(metrics.relation_heads,), claims=claims,
    figures=figures, describe=describe, validate=validate, compile_options=train.FAST_COMPILE,
    sections=sections, summary=summary)

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

import collections

import jax.numpy as jnp
import numpy as np

from qkvjax import config as config_lib
from qkvjax import metrics
from qkvjax import plotting
from qkvjax import report
from qkvjax import stats
from qkvjax import study
from qkvjax import train
from qkvjax.study import Claim, Figure
from qkvjax.tasks import base
from qkvjax.tasks.relations import RELATIONS

REL_TEXT = {"select": "select: verb -> the noun it selects (answer: its colour)",
            "prev": "prev: verb -> the token before it (answer: the adverb's manner)"}
HEAD_BUDGETS = ("total", "per_head")
MIN_DAMAGE = 1e-3  # nats: below this total, a relation's ablation profile is undefined
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
  config_lib.require(c.model.n_heads == 1, "model.n_heads", c.model.n_heads,
                     "1, set per condition by this study (choose head counts with "
                     "config.n_heads_list)")
  config_lib.require(c.head_budget != "total" or all(c.model.d_model % h == 0 for h in heads),
                     "n_heads_list", heads, "with head_budget='total', divisors of "
                     f"config.model.d_model={c.model.d_model}")
  config_lib.require_at_least(c, ("eval_batch_size",))
  config_lib.require(0 < c.separation_threshold < 1, "separation_threshold",
                     c.separation_threshold, "0 < threshold < 1")


# ---- metric (inside the jit) ----------------------------------------------------------
def head_metrics(m) -> dict:
  """On one fixed eval batch: loss and accuracy (per relation too); per site,
  head and relation, the final position's attention on the relation's target
  and the relation's loss increase when the head alone is ablated."""
  ev = m.eval_batch(m.config.eval_batch_size)
  loss, full, captured = m.forward(ev)
  out = {"eval_loss": loss, **{f"eval_{k}": v for k, v in full.items()}}
  for site, tr in captured.attention.items():
    w_BxSxH = jnp.swapaxes(tr.weights_BxHxTxS[:, :, -1], 1, 2)
    for r, pos_B in (("select", ev.target_pos_B), ("prev", ev.prev_pos_B)):
      share_H = jnp.mean(base.at_position(w_BxSxH, pos_B), 0)
      out.update({f"share/{r}/{site}/H{h}": share_H[h] for h in range(w_BxSxH.shape[2])})
    for h in range(w_BxSxH.shape[2]):
      ablated = m.forward(ev, params=metrics.ablate_head(m.params, site, h))[1]
      for r in RELATIONS:
        out[f"ablation/{r}/{site}/H{h}"] = ablated[f"loss/{r}"] - full[f"loss/{r}"]
  return out


# ---- analysis (from the saved run) ----------------------------------------------------
def n_heads(run, cond: str) -> int:
  return run.conditions[cond]["model.n_heads"]


def head_matrix(run, prefix: str, cond: str, index: int) -> np.ndarray:
  """[seeds, layers * heads, relations] of ``prefix/<relation>/L<l>/H<h>``."""
  keys = [f"L{l}/H{h}" for l in range(run.config.model.n_layers)
          for h in range(n_heads(run, cond))]
  return np.stack([np.stack([run.table(f"{prefix}/{r}/{k}", condition=cond)[1][:, index]
                             for k in keys], 1) for r in RELATIONS], -1)


def normalized(m_SxKxR: np.ndarray) -> np.ndarray:
  """Each relation's non-negative profile over heads, summing to 1; NaN
  where the relation's total is below ``MIN_DAMAGE``."""
  m = np.clip(m_SxKxR, 0.0, None)
  total_SxR = m.sum(1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total_SxR > MIN_DAMAGE, m / total_SxR, np.nan)


def separation(m_SxKxR: np.ndarray) -> np.ndarray:
  """Per seed, 1 - sum_h min(p_select(h), p_prev(h)): the share of the two
  relations' profiles over heads that does not overlap."""
  p = normalized(m_SxKxR)
  return 1.0 - np.sum(np.minimum(p[..., 0], p[..., 1]), 1)


def distinct_top_heads(d_SxKxR: np.ndarray) -> np.ndarray:
  """Per seed, 1 if the head whose ablation hurts ``select`` most is not the
  one that hurts ``prev`` most, else 0 (NaN for a diverged seed)."""
  top_SxR = np.argmax(np.nan_to_num(d_SxKxR, nan=-np.inf), 1)
  return np.where(np.all(np.isfinite(d_SxKxR), (1, 2)), top_SxR[:, 0] != top_SxR[:, 1], np.nan)


def participation(d_SxKxR: np.ndarray) -> np.ndarray:
  """[seeds, relations]: effective number of heads carrying each relation,
  1 / sum_h p_r(h)^2 of the normalized ablation profile."""
  return 1.0 / np.sum(normalized(d_SxKxR) ** 2, 1)


def head_roles(d_SxKxR: np.ndarray) -> list[str | None]:
  """Per seed, the assignment pattern: each head is 'select', 'prev', 'both'
  or 'neither' by whether its share of each relation's ablation damage is at
  least its uniform share 1/K; the pattern counts heads per role."""
  p, k, out = normalized(d_SxKxR), d_SxKxR.shape[1], []
  names = ("neither", "prev", "select", "both")  # by (takes select, takes prev) as bits
  for p_KxR in p:
    roles = collections.Counter(names[2 * a + b] for a, b in p_KxR >= 1.0 / k - 1e-9)
    out.append(", ".join(f"{roles[r]} {r}" for r in ("select", "prev", "both", "neither")
                         if roles[r]) if np.all(np.isfinite(p_KxR)) else None)
  return out


def chance(run) -> dict[str, float]:
  """Per relation, the best accuracy without attention: what the verb alone
  predicts of the selected noun's colour, and the most common manner."""
  tables = run.file("task.json")["two_relations"]
  return {"select": tables["verb_only_accuracy"], "prev": tables["manner_majority_accuracy"]}


def per_seed(run, cond: str) -> dict[str, np.ndarray]:
  """Per seed, at the end: what the claims, table and figures use."""
  damage = head_matrix(run, "ablation", cond, -1)
  acc = {r: run.final(f"eval_accuracy/{r}", condition=cond) for r in RELATIONS}
  n_eff = participation(damage)
  return {"acc_select": acc["select"], "acc_prev": acc["prev"],
          "acc_over_chance_min": np.minimum(*(acc[r] - chance(run)[r] for r in RELATIONS)),
          "separation_attn": separation(head_matrix(run, "share", cond, -1)),
          "separation_attn_init": separation(head_matrix(run, "share", cond, 0)),
          "separation_ablation": separation(damage),
          "distinct_top_heads": distinct_top_heads(damage),
          "n_eff_select": n_eff[:, 0], "n_eff_prev": n_eff[:, 1]}


def claims(run) -> list[Claim]:
  thr = run.config.separation_threshold
  out = [Claim(
      f"prerequisite: the model with {cond} learns both relations",
      "(not a claim; head roles mean little if the task is not learned)", "qkvjax",
      f"{cond}: final eval accuracy minus the best accuracy without attention (verb-only "
      "for select, most common manner for prev), the smaller over the two relations; "
      "smallest effect of interest 0.05, as for every prerequisite",
      lambda r, cond=cond: per_seed(r, cond)["acc_over_chance_min"], stats.Greater(0.0, 0.05))
         for cond in run.conditions]
  for cond in (c for c in run.conditions if n_heads(run, c) >= 2):
    for key, what in (("separation_attn", "attention share"),
                      ("separation_ablation", "ablation damage")):
      out.append(Claim(
          f"{cond} divide the two relations between them ({what})", QUOTE,
          "division_of_labor",
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
    counts = collections.Counter(p for p in patterns if p is not None)
    modal, modal_n = counts.most_common(1)[0] if counts else (None, 0)
    out[cond] = {**{k: {**stats.describe(v), "per_seed": v}
                    for k, v in per_seed(run, cond).items()},
                 "n_heads": n_heads(run, cond),
                 "d_head": run.conditions[cond].get("model.d_head", run.config.model.d_head),
                 "patterns": patterns, "modal_pattern": modal,
                 "modal_fraction": modal_n / sum(counts.values()) if modal else None,
                 "share_SxKxR": head_matrix(run, "share", cond, -1), "ablation_SxKxR": damage}
  return {"head_budget": run.config.head_budget, "chance": chance(run), "heads": out}


# ---- figures and report (from the saved run) ------------------------------------------
def accuracy_figure(run):
  """Rows: relations; a band per head count."""
  fig = plotting.band_grid(
      run, [("eval accuracy", f"eval_accuracy/{r}") for r in RELATIONS], {"": {
          c: c for c in run.conditions}}, plotting.condition_colors(list(run.conditions)),
      height=2.6, width=4.4)
  for ax, r in zip(fig.axes, RELATIONS):
    ax.axhline(chance(run)[r], color="0.5", ls=":", lw=1, label="best without attention")
    ax.set(title=REL_TEXT[r], ylim=(0, 1.02))
  fig.axes[0].legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  fig.tight_layout()
  return fig


def heatmap_figure(run, prefix: str, title: str, cmap: str):
  """Rows: head counts; columns: seeds; each cell a head x relation heatmap."""
  return plotting.seed_heatmaps({c: head_matrix(run, prefix, c, -1) for c in run.conditions},
                                RELATIONS, title, cmap, 1.0 if prefix == "share" else None)


def separation_figure(run):
  """Rows: the separation indices and effective heads per relation; dots: seeds."""
  panels = (("separation_attn", "separation index\n(attention share)"),
            ("separation_ablation", "separation index\n(ablation damage)"),
            ("n_eff_select", "effective heads\ncarrying select"),
            ("n_eff_prev", "effective heads\ncarrying prev"))
  per = {c: per_seed(run, c) for c in run.conditions}
  fig = plotting.dots_grid(
      [(label, lambda c, k=k: per[c][k]) for k, label in panels],
      {"At the end, per seed (dots) and mean ± 1 std; dashed: threshold":
       {c: c for c in run.conditions}}, plotting.condition_colors(list(run.conditions)),
      height=2.2, width=4.4)
  for ax, _ in zip(fig.axes, panels[:2]):
    ax.axhline(run.config.separation_threshold, color="0.5", ls="--", lw=1)
    ax.set_ylim(-0.02, 1.02)
  return fig


def figures(run) -> list[Figure]:
  return [
      Figure("Eval accuracy of each relation during training", "accuracy", accuracy_figure),
      Figure("Head × relation: attention share of the final position, per seed",
             "heatmap_attention", lambda r: heatmap_figure(
                 r, "share", "Attention share of the final position on each relation's "
                 "target (rows: heads; end of training)", "Blues")),
      Figure("Head × relation: loss increase when the head alone is ablated, per seed",
             "heatmap_ablation", lambda r: heatmap_figure(
                 r, "ablation", "Loss increase of each relation (nats) when the head alone "
                 "is ablated (end of training; colour scale per head count)", "Reds")),
      Figure("Separation index and effective heads per relation", "separation",
             separation_figure)]


def describe(run) -> str:
  c = run.config
  return ("Budget: " + (f"n_heads × d_head = d_model = {c.model.d_model}" if c.head_budget
                        == "total" else f"d_head = {c.model.d_head}") + ". Task (`task.json`): "
          "nouns of distinct categories, an adverb, then a verb; at the verb the model answers "
          "both relations, each from its own output tokens with its own cross-entropy: "
          + "; ".join(REL_TEXT.values()) + f". Measured on one fixed eval batch of "
          f"{c.eval_batch_size} sequences.")


def sections(run, summ) -> list[str]:
  rows = []
  for cond, e in summ["heads"].items():
    f = lambda k: report.fmt(e[k]["mean"])  # pylint: disable=cell-var-from-loop
    top, modal = e["distinct_top_heads"], e["modal_pattern"]
    rows.append([
        cond, e["d_head"], report.effect_cell(e["acc_select"]),
        report.effect_cell(e["acc_prev"]), f"{f('separation_attn_init')} → {f('separation_attn')}",
        report.effect_cell(e["separation_ablation"]),
        "n/a" if top["mean"] is None else f"{round(top['mean'] * top['n'])}/{top['n']}",
        f"{f('n_eff_select')} / {f('n_eff_prev')}",
        "n/a" if modal is None else f"{modal} ({e['modal_fraction']:.0%})"])
  ch = summ["chance"]
  return ["## Per head count (final values)", ""] + report.table(
      ["heads", "d_head", "accuracy select", "accuracy prev", "separation (attention) at "
       "init → end", "separation (ablation)", "distinct top heads", "effective heads select "
       "/ prev", "modal assignment (share of seeds)"], rows) + [
           "", f"Best accuracy without attention: select {ch['select']:.3f} (the verb alone), "
           f"prev {ch['prev']:.3f} (most common manner). Assignment: a head takes a relation "
           "when its share of that relation's ablation damage is at least its uniform share "
           "1/heads; every seed's pattern is in `summary.json`.", ""]


STUDY = study.Study(
    name="heads", title="qkvjax `heads`: do attention heads specialize to different relations?",
    task="two_relations", conditions=conditions, metrics=(head_metrics,), claims=claims,
    figures=figures, describe=describe, validate=validate, compile_options=train.FAST_COMPILE,
    sections=sections, summary=summary)

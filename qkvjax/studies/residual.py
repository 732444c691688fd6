"""``--exp=residual``: do residual connections keep a token's representation
continuous with its embedding, and what happens to the tokens and to the
gradients of W_Q, W_K and W_V with depth when they are removed?

At initialization only (``steps`` = 0), per depth and condition: the
representation after every block (cosine and CKA with the token embedding,
rank collapse) and every matrix's gradient norm. ``residual`` and
``scaled_residual`` differ only in the foldable ``model.residual_scale`` (one
program per depth); all conditions draw the same seed keys, hence the same
weights and batches: differences are paired per seed."""

from __future__ import annotations

import math

import numpy as np

from qkvjax import claim_kinds
from qkvjax import config as config_lib
from qkvjax import effects
from qkvjax import figure_kinds
from qkvjax import metrics
from qkvjax import report
from qkvjax import stats
from qkvjax import study
from qkvjax import train
from qkvjax.study import Claim, Figure

# condition -> (residual stream on?, residual_scale as a function of depth)
CONDITIONS = {
    "residual": (True, lambda depth: 1.0),
    "no_residual": (False, lambda depth: 1.0),
    "scaled_residual": (True, lambda depth: 1.0 / math.sqrt(depth))}
COLORS = {"residual": "#1f77b4", "no_residual": "#d62728", "scaled_residual": "#2ca02c"}
LABELS = {"residual": "x + f(x)", "no_residual": "f(x), no skip",
          "scaled_residual": "x + f(x)/√depth"}
MAX_DEPTH = 64
QUOTE_CONTINUITY = ("While maintaining continuity with the original token meaning (residual "
                    "connections can compensate if continuity degradation is a concern)")


def name(condition: str, depth: int) -> str:
  return f"{condition}/depth{depth}"


def conditions(c) -> dict[str, dict]:
  return {name(k, d): {"model.n_layers": d, "model.residual": CONDITIONS[k][0],
                       "model.residual_scale": CONDITIONS[k][1](d)}
          for d in sorted(c.depths) for k in c.conditions}


def validate(c) -> None:
  config_lib.require(c.steps == 0, "steps", c.steps,
                     "0 (this study measures at initialization, without training)")
  config_lib.validate_common(c, min_steps=0)
  config_lib.require_at_least(c, ("num_seeds",), 2)
  config_lib.require_values(c, "depths", lambda v: isinstance(v, int) and 1 <= v <= MAX_DEPTH,
                            f"distinct integers in 1..{MAX_DEPTH}")
  config_lib.require_names(c, "conditions", CONDITIONS)


def along(prefix: str):
  """``(run, condition, depth)`` -> [seeds, depth + 1]: ``prefix/X0`` ...
  ``prefix/X<depth>`` at init."""
  return lambda run, c, depth: effects.stream(run, prefix, depth, condition=name(c, depth))


def qk_to_v(run, condition: str, depth: int, blocks=None) -> np.ndarray:
  """[seeds]: log10(sqrt(|grad W_Q| |grad W_K|) / |grad W_V|), mean over
  ``blocks`` (every block by default)."""
  return -effects.grad_ratio(run, blocks or effects.blocks(depth),
                              condition=name(condition, depth))


def grad_norm(run, matrix: str, condition: str, depth: int) -> np.ndarray:
  """[seeds]: gradient norm of one matrix kind, mean over blocks."""
  return effects.grad_norm(run, matrix, effects.blocks(depth), condition=name(condition, depth))


def claims(run) -> list[Claim]:
  have, hi, lo = set(run.config.conditions), max(run.config.depths), min(run.config.depths)
  at = lambda prefix: lambda r, c: along(prefix)(r, c, hi)[:, -1]  # after the last block
  out = []
  if {"residual", "no_residual"} <= have:
    out += [Claim(
        "residual connections keep a token's representation continuous with its embedding",
        QUOTE_CONTINUITY, "division_of_labor",
        f"depth {hi}, at init: mean over tokens of cos(representation after the last "
        "block, the token's embedding), with skips minus without (same weights); smallest "
        "effect 0.05 of cosine (small against the 0..1 it spans here)",
        claim_kinds.paired(at("embed_cos"), "residual", "no_residual"),
        stats.Greater(0.0, 0.05)), Claim(
        "without skips, the tokens collapse toward one vector (rank collapse)",
        "Pure Attention Loses Rank Doubly Exponentially with Depth", "dong2021",
        f"depth {hi}, at init: ||X - 1 xbar^T|| / ||X|| after the last block, with skips "
        "minus without; smallest effect 0.05 (5% of the measure's 0..1 range)",
        claim_kinds.paired(at("rank_collapse"), "residual", "no_residual"),
        stats.Greater(0.0, 0.05))]
  if "no_residual" in have and hi > lo:
    out.append(Claim(
        "as tokens align, the gradients of W_Q and W_K vanish relative to W_V",
        "testing whether the gradients of W_Q and W_K vanish relative to W_V as tokens "
        "align", "qkvjax",
        f"after Noci et al. 2022; no skips, at init: log10(sqrt(|∇W_Q| |∇W_K|) / |∇W_V|), "
        f"mean over blocks, at depth {lo} minus at depth {hi} (> 0: the Q/K share shrinks "
        "with depth); smallest effect 0.1 (a factor 1.26)",
        claim_kinds.paired(lambda r, d: qk_to_v(r, "no_residual", d), lo, hi),
        stats.Greater(0.0, 0.1)))
  if "scaled_residual" in have:
    out += [Claim(
        f"1/sqrt(depth) residual scaling keeps W_Q, W_K gradients alive (vs {LABELS[other]})",
        "with 1/sqrt(depth) residual scaling as the remedy", "qkvjax",
        f"after Noci et al. 2022; depth {hi}, at init: log10 Q/K-to-V gradient ratio (as "
        f"above), scaled residual minus {other}; smallest effect 0.1 (a factor 1.26)",
        claim_kinds.paired(lambda r, c: qk_to_v(r, c, hi), "scaled_residual", other),
        stats.Greater(0.0, 0.1)) for other in ("no_residual", "residual") if other in have]
    if "residual" in have:
      out.append(Claim(
          "1/sqrt(depth) residual scaling keeps more continuity with the embedding",
          QUOTE_CONTINUITY, "division_of_labor",
          f"depth {hi}, at init: cos(last representation, token embedding), scaled "
          "residual minus unscaled residual; smallest effect 0.05",
          claim_kinds.paired(at("embed_cos"), "scaled_residual", "residual"),
          stats.Greater(0.0, 0.05)))
  return out


# ---- figures and report ----------------------------------------------------------
SWEEP = {"sizes": lambda r: r.config.depths, "series": lambda r: r.config.conditions,
         "labels": LABELS, "xlabel": "depth (blocks)", "note": "at initialization"}
PROFILE = {**SWEEP, "colors": COLORS, "width": 3.5, "height": 2.8}
STREAM = {**PROFILE, "left": ("blocks applied (depth-{} model; 0 = input)",
                              "along the stream, depth {}"), "right": "after the last block"}


def figures(run) -> list[Figure]:
  del run
  return [
      figure_kinds.profile_and_sweep(
          "Continuity with the token embedding", "continuity", along("embed_cos"), None,
          ylabel="cos(representation, token embedding)",
          suptitle="Does a token stay continuous with its embedding?", **STREAM),
      figure_kinds.profile_and_sweep(
          "Rank collapse", "rank_collapse", along("rank_collapse"), None,
          ylabel="||X − 1x̄ᵀ|| / ||X||", suptitle="Do the tokens collapse to one vector?",
          **STREAM),
      figure_kinds.profile_and_sweep(
          "Q/K-to-V gradient ratio", "grad_ratio",
          lambda r, c, d: np.stack([qk_to_v(r, c, d, [s]) for s in effects.blocks(d)], 1),
          qk_to_v, ylabel="log10 √(‖∇W_Q‖‖∇W_K‖) / ‖∇W_V‖",
          left=("block (depth-{} model)", "per block, depth {}"), right="mean over blocks",
          refs=[figure_kinds.Ref(0.0)], suptitle="Do W_Q and W_K gradients vanish relative "
          "to W_V as tokens align?", **PROFILE),
      figure_kinds.matrices_over_sizes(
          "Per-matrix gradient norms against depth", "grad_norms_vs_depth", grad_norm,
          ylabel="gradient norm (mean over blocks)", suptitle="Per-matrix gradient norms at "
          "initialization against depth", height=2.7, **SWEEP),
  ]


def sections(run, summ) -> list[str]:
  """Per condition and depth, the values the claims read (per-seed values of
  every logged metric are in summary["final"]: step 0 is the last step)."""
  del summ
  at = lambda fn: lambda cd: report.seeds_cell(fn(run, *cd))
  return ["## At initialization, per condition and depth", ""] + report.spec_table({
      "condition": lambda cd: cd[0], "depth": lambda cd: cd[1],
      "cos(last rep., embedding)": at(lambda *a: along("embed_cos")(*a)[:, -1]),
      "rank collapse (last rep.)": at(lambda *a: along("rank_collapse")(*a)[:, -1]),
      "log10 Q/K-to-V grad ratio": at(qk_to_v), "seeds": lambda cd: run.config.num_seeds},
      [(c, d) for c in run.config.conditions for d in sorted(run.config.depths)]) + [""]


def describe(run) -> str:
  c, m = run.config, run.config.model
  return (
      f"At initialization only (no training): depths {sorted(c.depths)}; blocks of "
      f"{m.n_heads} heads × d_head {m.d_head}, d_model {m.d_model}, pre-LayerNorm, "
      f"{'with' if m.mlp else 'no'} MLP, {'causal' if m.causal else 'bidirectional'}; "
      f"batch {c.batch_size} sequences of {c.task.n_slots + 1} tokens of the selection "
      "task. Conditions: `residual` x + f(LN(x)); `no_residual` f(LN(x)); "
      "`scaled_residual` x + f(LN(x))/√depth. For each depth the conditions share "
      "weights and batches (same seed keys), so differences are paired per seed. "
      "Continuity: mean over tokens of the cosine between the representation and the "
      "token's own embedding. Rank collapse: ||X − 1x̄ᵀ||_F / ||X||_F per sequence (0: "
      "all tokens identical). Gradients: of the selection-task loss, per matrix.\n\n"
      "Scope: everything here is at initialization, where the articles' claims are about "
      "trained models; it shows what the architecture does to a token before any "
      "learning. Without skips, once the tokens have collapsed (rank-collapse measure "
      "~1e-7) the W_Q and W_K gradients sit at float32 round-off: their exact value is 0 "
      "(all scores in a row are equal, so the softmax does not depend on W_Q or W_K), so "
      "the size of the log10 ratio there reflects the precision, not a rate.")


STUDY = study.Study(
    name="residual", task="selection", conditions=conditions, compile_options=train.FAST_COMPILE,
    title="qkvjax: residual connections, continuity with the embedding, and rank collapse",
    metrics=(metrics.attention_signal, metrics.representation_metrics, metrics.matrix_grad_norms),
    claims=claims, figures=figures, describe=describe, validate=validate, sections=sections)

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

from qkvjax import config as config_lib
from qkvjax import effects
from qkvjax import metrics
from qkvjax import plotting
from qkvjax import report
from qkvjax import stats
from qkvjax import study
from qkvjax import train
from qkvjax.study import Claim, Figure

plt = plotting.plt
# condition -> (residual stream on?, residual_scale as a function of depth)
CONDITIONS = {
    "residual": (True, lambda depth: 1.0),
    "no_residual": (False, lambda depth: 1.0),
    "scaled_residual": (True, lambda depth: 1.0 / math.sqrt(depth)),
}
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
  config_lib.require_values(c, "conditions", lambda v: v in CONDITIONS,
                            "distinct names from " + ", ".join(CONDITIONS))


def grad_norms(m) -> dict:
  """Gradient norm of every matrix (not per head: hundreds of keys at depth 16)."""
  return {f"grad_norm/{k}": metrics.frobenius(g.value)
          for k, g in metrics.matrices(m.grads).items()}


def depths(run) -> list[int]:
  return sorted(run.config.depths)


def stream(run, prefix: str, condition: str, depth: int) -> np.ndarray:
  """[seeds, depth + 1]: ``prefix/X0`` ... ``prefix/X<depth>`` at init."""
  return np.stack([run.initial(f"{prefix}/X{l}", condition=name(condition, depth))
                   for l in range(depth + 1)], 1)


def last(run, prefix: str, condition: str, depth: int) -> np.ndarray:
  """[seeds]: ``prefix`` after the last block."""
  return run.initial(f"{prefix}/X{depth}", condition=name(condition, depth))


def qk_to_v(run, condition: str, depth: int, blocks=None) -> np.ndarray:
  """[seeds]: log10(sqrt(|grad W_Q| |grad W_K|) / |grad W_V|), mean over
  ``blocks`` (every block by default)."""
  return -effects.grad_ratio(run, blocks or [f"L{l}" for l in range(depth)],
                              condition=name(condition, depth))


def grad_norm(run, matrix: str, condition: str, depth: int) -> np.ndarray:
  """[seeds]: gradient norm of one matrix kind, mean over blocks."""
  return effects.site_mean(lambda s: run.initial(f"grad_norm/{s}/{matrix}", condition=name(
      condition, depth)), [f"L{l}" for l in range(depth)])


def claims(run) -> list[Claim]:
  ds, have = depths(run), set(run.config.conditions)
  hi, lo = max(ds), min(ds)
  out = []
  if {"residual", "no_residual"} <= have:
    out += [Claim(
        "residual connections keep a token's representation continuous with its embedding",
        QUOTE_CONTINUITY, "division_of_labor",
        f"depth {hi}, at init: mean over tokens of cos(representation after the last "
        "block, the token's embedding), with skips minus without (same weights); smallest "
        "effect 0.05 of cosine (small against the 0..1 it spans here)",
        lambda r: last(r, "embed_cos", "residual", hi) - last(r, "embed_cos", "no_residual", hi),
        stats.Greater(0.0, 0.05)), Claim(
        "without skips, the tokens collapse toward one vector (rank collapse)",
        "Pure Attention Loses Rank Doubly Exponentially with Depth", "dong2021",
        f"depth {hi}, at init: ||X - 1 xbar^T|| / ||X|| after the last block, with skips "
        "minus without; smallest effect 0.05 (5% of the measure's 0..1 range)",
        lambda r: (last(r, "rank_collapse", "residual", hi)
                   - last(r, "rank_collapse", "no_residual", hi)),
        stats.Greater(0.0, 0.05))]
  if "no_residual" in have and hi > lo:
    out.append(Claim(
        "as tokens align, the gradients of W_Q and W_K vanish relative to W_V",
        "testing whether the gradients of W_Q and W_K vanish relative to W_V as tokens "
        "align", "qkvjax",
        f"after Noci et al. 2022; no skips, at init: log10(sqrt(|∇W_Q| |∇W_K|) / |∇W_V|), "
        f"mean over blocks, at depth {lo} minus at depth {hi} (> 0: the Q/K share shrinks "
        "with depth); smallest effect 0.1 (a factor 1.26)",
        lambda r: qk_to_v(r, "no_residual", lo) - qk_to_v(r, "no_residual", hi),
        stats.Greater(0.0, 0.1)))
  if "scaled_residual" in have:
    for other in [c for c in ("no_residual", "residual") if c in have]:
      out.append(Claim(
          f"1/sqrt(depth) residual scaling keeps W_Q, W_K gradients alive (vs {LABELS[other]})",
          "with 1/sqrt(depth) residual scaling as the remedy", "qkvjax",
          f"after Noci et al. 2022; depth {hi}, at init: log10 Q/K-to-V gradient ratio (as "
          f"above), scaled residual minus {other}; smallest effect 0.1 (a factor 1.26)",
          lambda r, o=other: qk_to_v(r, "scaled_residual", hi) - qk_to_v(r, o, hi),
          stats.Greater(0.0, 0.1)))
    if "residual" in have:
      out.append(Claim(
          "1/sqrt(depth) residual scaling keeps more continuity with the embedding",
          QUOTE_CONTINUITY, "division_of_labor",
          f"depth {hi}, at init: cos(last representation, token embedding), scaled "
          "residual minus unscaled residual; smallest effect 0.05",
          lambda r: (last(r, "embed_cos", "scaled_residual", hi)
                     - last(r, "embed_cos", "residual", hi)),
          stats.Greater(0.0, 0.05)))
  return out


# ---- figures -------------------------------------------------------------------
def _by_depth(ax, ds):
  ax.set_xscale("log", base=2)
  ax.set_xticks(ds, [str(d) for d in ds])
  ax.set_xlabel("depth (blocks)")


def _two_panels(run, along, after, ylabel: str, left: tuple[str, str], right_title: str,
                title: str, zero: bool = False):
  """Left: ``along(c, depth)`` [seeds, n] at the largest depth (``left``: its
  x label and title); right: ``after(c, depth)`` [seeds] against depth; one
  band per condition."""
  ds = depths(run)
  fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), sharey=True)
  n = 0
  for c in run.config.conditions:
    profile = along(run, c, ds[-1])
    n = plotting.band(axes[0], np.arange(profile.shape[1]), profile, COLORS[c], LABELS[c])
    plotting.band(axes[1], np.array(ds), np.stack([after(run, c, d) for d in ds], 1),
                  COLORS[c], LABELS[c])
  if zero:
    for ax in axes:
      ax.axhline(0, color="0.5", ls=":", lw=1)
  axes[0].set(xlabel=left[0].format(ds[-1]), ylabel=ylabel, title=left[1].format(ds[-1]))
  axes[1].set_title(right_title)
  _by_depth(axes[1], ds)
  axes[0].legend(frameon=False)
  fig.suptitle(title, y=1.02)
  plotting.seed_note(fig, n, "at initialization")
  return fig


def profile_figure(prefix: str, ylabel: str, title: str):
  return lambda run: _two_panels(
      run, lambda r, c, d: stream(r, prefix, c, d), lambda r, c, d: last(r, prefix, c, d),
      ylabel, ("blocks applied (depth-{} model; 0 = input)", "along the stream, depth {}"),
      "after the last block", title)


def grad_ratio_figure(run):
  return _two_panels(
      run, lambda r, c, d: np.stack([qk_to_v(r, c, d, [f"L{l}"]) for l in range(d)], 1),
      qk_to_v, "log10 √(‖∇W_Q‖‖∇W_K‖) / ‖∇W_V‖",
      ("block (depth-{} model)", "per block, depth {}"), "mean over blocks",
      "Do W_Q and W_K gradients vanish relative to W_V as tokens align?", zero=True)


def grad_norms_figure(run):
  ds, conds = depths(run), list(run.config.conditions)
  fig, axes = plt.subplots(1, len(conds), figsize=(3.2 * len(conds), 2.7), squeeze=False,
                           sharey=True)
  n = 0
  for ax, c in zip(axes[0], conds):
    for m in ("query", "key", "value", "out"):
      n = plotting.band(ax, np.array(ds), np.stack([grad_norm(run, m, c, d) for d in ds], 1),
                        plotting.MATRIX_COLORS[m], plotting.MATRIX_LABELS[m], log=True)
    _by_depth(ax, ds)
    ax.set_title(LABELS[c])
  axes[0][0].set_ylabel("gradient norm (mean over blocks)")
  axes[0][-1].legend(frameon=False)
  fig.suptitle("Per-matrix gradient norms at initialization against depth", y=1.02)
  plotting.seed_note(fig, n, "at initialization")
  return fig


def figures(run) -> list[Figure]:
  return [
      Figure("Continuity with the token embedding", "continuity", profile_figure(
          "embed_cos", "cos(representation, token embedding)",
          "Does a token stay continuous with its embedding?")),
      Figure("Rank collapse", "rank_collapse", profile_figure(
          "rank_collapse", "||X − 1x̄ᵀ|| / ||X||", "Do the tokens collapse to one vector?")),
      Figure("Q/K-to-V gradient ratio", "grad_ratio", grad_ratio_figure),
      Figure("Per-matrix gradient norms against depth", "grad_norms_vs_depth",
             grad_norms_figure),
  ]


def sections(run, summ) -> list[str]:
  """Per condition and depth, the values the claims read (per-seed values of
  every logged metric are in summary["final"]: step 0 is the last step)."""
  del summ
  cell = lambda x: report.effect_cell(stats.describe(x))
  rows = [[c, d, cell(last(run, "embed_cos", c, d)), cell(last(run, "rank_collapse", c, d)),
           cell(qk_to_v(run, c, d)), run.config.num_seeds]
          for c in run.config.conditions for d in depths(run)]
  return ["## At initialization, per condition and depth", ""] + report.table(
      ["condition", "depth", "cos(last rep., embedding)", "rank collapse (last rep.)",
       "log10 Q/K-to-V grad ratio", "seeds"], rows) + [""]


def describe(run) -> str:
  c, m = run.config, run.config.model
  return (
      f"At initialization only (no training): depths {depths(run)}; blocks of "
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
    name="residual",
    title="qkvjax: residual connections, continuity with the embedding, and rank collapse",
    task="selection", conditions=conditions,
    metrics=(metrics.attention_signal, metrics.representation_metrics, grad_norms),
    claims=claims, figures=figures, describe=describe, validate=validate,
    compile_options=train.FAST_COMPILE, sections=sections)

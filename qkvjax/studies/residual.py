"""``--exp=residual``: do residual connections keep a token's representation
continuous with its embedding, and what happens to the tokens and to the
gradients of W_Q, W_K and W_V with depth when they are removed?

For each depth ``run`` measures the model at initialization under every
condition (``CONDITIONS``) over ``num_seeds`` seeds in one jitted, vmapped
call: the representation after every block (cosine and CKA with the token
embedding, rank-collapse measure) and the gradient norm of every matrix. All
conditions of a depth are measured on the same initial weights and batches,
so their differences are paired per seed. Rows of ``metrics.jsonl`` carry
``condition`` and ``depth``; there is no training (``steps`` = 0).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import ml_collections
import numpy as np

from qkvjax import config as config_lib
from qkvjax import plotting
from qkvjax import report
from qkvjax import results
from qkvjax import runner
from qkvjax import signal
from qkvjax import stats
from qkvjax import train
from qkvjax.config import ConfigError

EXP = "residual"
ARTICLE_000 = "../shared/seeds/000 (division of labour among Q, K, V)"
ISSUE_NOCI = "issue 3, after Noci et al. 2022 (Signal propagation in transformers)"
DONG = "Dong et al. 2021 (the paper's title)"

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


# ---- config ------------------------------------------------------------------
def depths(config) -> list[int]:
  return sorted(config_lib.parse_list(config, "depths", int,
                           f"distinct comma-separated integers in 1..{MAX_DEPTH}",
                           lambda v: 1 <= v <= MAX_DEPTH))


def conditions(config) -> list[str]:
  return config_lib.parse_list(config, "conditions", str,
                    "distinct comma-separated names from " + ", ".join(CONDITIONS),
                    lambda v: v in CONDITIONS)


def condition_config(config, condition: str, depth: int) -> ml_collections.ConfigDict:
  """The config one program measures: ``depth`` blocks under ``condition``."""
  c = ml_collections.ConfigDict(config.to_dict())
  residual, scale = CONDITIONS[condition]
  c.model.n_layers = depth
  c.model.residual = residual
  c.model.residual_scale = scale(depth)
  return c


def check(config, results_dir) -> None:
  if config.steps != 0:
    raise ConfigError(f"config.steps={config.steps!r} is out of range; accepted: 0 "
                      "(this study measures at initialization, without training)")
  config_lib.validate_common(ml_collections.ConfigDict({**config.to_dict(), "steps": 1}))
  config_lib.require_at_least(config, ("num_seeds",), 2)
  config_lib.validate_selection_task(config.task)
  config_lib.validate_optim(config.optim)
  for condition in conditions(config):
    for depth in depths(config):
      config_lib.validate_model(condition_config(config, condition, depth).model)
  results.check_writable(results_dir, EXP)


def run(config, results_dir, progress: bool = True) -> pathlib.Path:
  """Measures every (depth, condition) at initialization, then finishes."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  run_dir = runner.start_run(results_dir, EXP, config, train.seed_mesh(config.num_seeds))
  writer = results.MetricsWriter(run_dir / "metrics.jsonl")
  try:
    for i, depth in enumerate(tqdm(depths(config), disable=not progress,
                                   desc=f"{config.num_seeds} seeds at init")):
      trainers = {c: train.make_trainer(condition_config(config, c, depth),
                                        trainer_class=signal.SignalTrainer)
                  for c in conditions(config)}
      if i == 0:
        results.write_json(run_dir / "task.json",
                           next(iter(trainers.values())).task.tables())
      for condition, metrics in signal.measure_at_init_together(trainers).items():
        writer.write(0, metrics, {"condition": condition, "depth": depth})
  finally:
    writer.close()
  finish(run_dir)
  return run_dir


# ---- analysis from saved rows --------------------------------------------------
def at_init(rows, key: str, condition: str, depth: int) -> np.ndarray:
  """[seeds]: one metric of one (condition, depth)."""
  return results.metric_table(rows, key, condition=condition, depth=depth)[1][:, 0]


def per_representation(rows, prefix: str, condition: str, depth: int) -> np.ndarray:
  """[seeds, depth + 1]: ``prefix/X0`` ... ``prefix/X<depth>``."""
  return np.stack([at_init(rows, f"{prefix}/X{l}", condition, depth)
                   for l in range(depth + 1)], 1)


def grad_ratio_per_layer(rows, condition: str, depth: int) -> np.ndarray:
  """[seeds, depth]: log10(sqrt(|grad W_Q| |grad W_K|) / |grad W_V|) per block."""
  cols = []
  for l in range(depth):
    g = {n: at_init(rows, f"grad_norm/L{l}/{n}", condition, depth)
         for n in ("query", "key", "value")}
    cols.append(np.log10(np.sqrt(g["query"] * g["key"]) / g["value"]))
  return np.stack(cols, 1)


def grad_ratio(rows, condition: str, depth: int) -> np.ndarray:
  """[seeds]: the per-block log10 Q/K-to-V gradient ratio, mean over blocks."""
  return grad_ratio_per_layer(rows, condition, depth).mean(1)


def grad_norm(rows, name: str, condition: str, depth: int) -> np.ndarray:
  """[seeds]: gradient norm of one matrix kind, mean over blocks."""
  return np.mean([at_init(rows, f"grad_norm/L{l}/{name}", condition, depth)
                  for l in range(depth)], 0)


def final_rep(rows, prefix: str, condition: str, depth: int) -> np.ndarray:
  return at_init(rows, f"{prefix}/X{depth}", condition, depth)


def evaluate_claims(rows, config) -> list[dict[str, Any]]:
  ds, conds = depths(config), set(conditions(config))
  d_max, d_min = max(ds), min(ds)
  out = []
  quote_cont = ("While maintaining continuity with the original token meaning (residual "
                "connections can compensate if continuity degradation is a concern)")
  if {"residual", "no_residual"} <= conds:
    gap = (final_rep(rows, "embed_cos", "residual", d_max)
           - final_rep(rows, "embed_cos", "no_residual", d_max))
    out.append(stats.claim(
        name="residual connections keep a token's representation continuous with its embedding",
        quote=quote_cont, source=ARTICLE_000,
        measured=(f"depth {d_max}, at init: mean over tokens of cos(representation after the "
                  "last block, the token's embedding), with skips minus without (same "
                  "weights)"),
        values=gap, verdict=stats.verdict_greater(gap)))
    rank = (final_rep(rows, "rank_collapse", "residual", d_max)
            - final_rep(rows, "rank_collapse", "no_residual", d_max))
    out.append(stats.claim(
        name="without skips, the tokens collapse toward one vector (rank collapse)",
        quote="Pure Attention Loses Rank Doubly Exponentially with Depth", source=DONG,
        measured=(f"depth {d_max}, at init: ||X - 1 xbar^T|| / ||X|| after the last block, "
                  "with skips minus without"),
        values=rank, verdict=stats.verdict_greater(rank)))

  if "no_residual" in conds and d_max > d_min:
    drop = grad_ratio(rows, "no_residual", d_min) - grad_ratio(rows, "no_residual", d_max)
    out.append(stats.claim(
        name="as tokens align, the gradients of W_Q and W_K vanish relative to W_V",
        quote=("testing whether the gradients of W_Q and W_K vanish relative to W_V as "
               "tokens align"), source=ISSUE_NOCI,
        measured=(f"no skips, at init: log10(sqrt(|∇W_Q| |∇W_K|) / |∇W_V|), mean over "
                  f"blocks, at depth {d_min} minus at depth {d_max} (> 0: the Q/K share "
                  "shrinks with depth)"),
        values=drop, verdict=stats.verdict_greater(drop)))

  if "scaled_residual" in conds:
    for other in ("no_residual", "residual"):
      if other not in conds:
        continue
      gain = grad_ratio(rows, "scaled_residual", d_max) - grad_ratio(rows, other, d_max)
      out.append(stats.claim(
          name=("1/sqrt(depth) residual scaling keeps W_Q, W_K gradients alive "
                f"(vs {LABELS[other]})"),
          quote="with 1/sqrt(depth) residual scaling as the remedy", source=ISSUE_NOCI,
          measured=(f"depth {d_max}, at init: log10 Q/K-to-V gradient ratio (as above), "
                    f"scaled residual minus {other}"),
          values=gain, verdict=stats.verdict_greater(gain)))
    if "residual" in conds:
      gap = (final_rep(rows, "embed_cos", "scaled_residual", d_max)
             - final_rep(rows, "embed_cos", "residual", d_max))
      out.append(stats.claim(
          name="1/sqrt(depth) residual scaling keeps more continuity with the embedding",
          quote=quote_cont, source=ARTICLE_000,
          measured=(f"depth {d_max}, at init: cos(last representation, token embedding), "
                    "scaled residual minus unscaled residual"),
          values=gap, verdict=stats.verdict_greater(gap)))
  return out


def summarize(rows, config) -> dict[str, Any]:
  ds, conds = depths(config), conditions(config)
  per_condition = {}
  for c in conds:
    for d in ds:
      entry = {
          "embed_cos_last": final_rep(rows, "embed_cos", c, d),
          "embed_cka_last": final_rep(rows, "embed_cka", c, d),
          "rank_collapse_last": final_rep(rows, "rank_collapse", c, d),
          "log10_qk_to_v_grad": grad_ratio(rows, c, d),
          "loss": at_init(rows, "loss", c, d),
          **{f"grad_norm_{n}": grad_norm(rows, n, c, d)
             for n in ("query", "key", "value", "out")},
      }
      per_condition[f"{c}/depth{d}"] = {k: {**stats.describe(v), "per_seed": v}
                                        for k, v in entry.items()}
  return {
      "num_seeds": int(config.num_seeds),
      "depths": ds,
      "conditions": conds,
      "claims": evaluate_claims(rows, config),
      "at_init": per_condition,
  }


# ---- figures -------------------------------------------------------------------
def _note(fig, n: int):
  fig.text(0.99, -0.01, f"mean ± 1 std over {n} seeds, at initialization", ha="right",
           va="top", fontsize=7, color="0.4")


def _by_depth_axes(ax, ds):
  ax.set_xscale("log", base=2)
  ax.set_xticks(ds, [str(d) for d in ds])
  ax.set_xlabel("depth (blocks)")


def profile_figure(rows, config, prefix: str, ylabel: str, title: str):
  """Left: ``prefix`` along the stream at the largest depth; right: after the
  last block, against depth."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ds, conds = depths(config), conditions(config)
  d_max = max(ds)
  fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), sharey=True)
  for c in conds:
    plotting.band(axes[0], np.arange(d_max + 1), per_representation(rows, prefix, c, d_max),
                  COLORS[c], LABELS[c])
    plotting.band(axes[1], np.array(ds), np.stack([final_rep(rows, prefix, c, d)
                                                   for d in ds], 1), COLORS[c], LABELS[c])
  axes[0].set_xlabel(f"blocks applied (depth-{d_max} model; 0 = input)")
  axes[0].set_ylabel(ylabel)
  axes[0].set_title(f"along the stream, depth {d_max}")
  axes[1].set_title("after the last block")
  _by_depth_axes(axes[1], ds)
  axes[0].legend(frameon=False)
  fig.suptitle(title, y=1.02)
  _note(fig, config.num_seeds)
  return fig


def grad_ratio_figure(rows, config):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ds, conds = depths(config), conditions(config)
  d_max = max(ds)
  fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8), sharey=True)
  for c in conds:
    plotting.band(axes[0], np.arange(d_max), grad_ratio_per_layer(rows, c, d_max),
                  COLORS[c], LABELS[c])
    plotting.band(axes[1], np.array(ds), np.stack([grad_ratio(rows, c, d) for d in ds], 1),
                  COLORS[c], LABELS[c])
  for ax in axes:
    ax.axhline(0, color="0.5", ls=":", lw=1)
  axes[0].set_xlabel(f"block (depth-{d_max} model)")
  axes[0].set_ylabel("log10 √(‖∇W_Q‖‖∇W_K‖) / ‖∇W_V‖")
  axes[0].set_title(f"per block, depth {d_max}")
  axes[1].set_title("mean over blocks")
  _by_depth_axes(axes[1], ds)
  axes[0].legend(frameon=False)
  fig.suptitle("Do W_Q and W_K gradients vanish relative to W_V as tokens align?", y=1.02)
  _note(fig, config.num_seeds)
  return fig


def grad_norms_figure(rows, config):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ds, conds = depths(config), conditions(config)
  fig, axes = plt.subplots(1, len(conds), figsize=(3.2 * len(conds), 2.7), squeeze=False,
                           sharey=True)
  for ax, c in zip(axes[0], conds):
    for name in ("query", "key", "value", "out"):
      plotting.band(ax, np.array(ds), np.stack([grad_norm(rows, name, c, d) for d in ds], 1),
                    plotting.MATRIX_COLORS[name], plotting.MATRIX_LABELS[name], log=True)
    _by_depth_axes(ax, ds)
    ax.set_title(LABELS[c])
  axes[0][0].set_ylabel("gradient norm (mean over blocks)")
  axes[0][-1].legend(frameon=False)
  fig.suptitle("Per-matrix gradient norms at initialization against depth", y=1.02)
  _note(fig, config.num_seeds)
  return fig


def write_report(run_dir, saved, summary, figures, config) -> None:
  m = config.model
  ds, conds = depths(config), conditions(config)
  lines = [
      "# qkvjax: residual connections, continuity with the embedding, and rank collapse",
      "",
      f"Run `{run_dir.name}`: {config.num_seeds} seeds at initialization (no training), "
      f"depths {ds}, conditions {conds}; blocks of {m.n_heads} heads × d_head {m.d_head}, "
      f"d_model {m.d_model}, pre-LayerNorm, {'with' if m.mlp else 'no'} MLP, "
      f"{'causal' if m.causal else 'bidirectional'}; batch {config.batch_size} sequences "
      f"of {config.task.n_slots + 1} tokens of the selection task; backend "
      f"{saved['backend']} ({saved['device_kind']}), jax {saved['versions']['jax']}, "
      f"commit {saved['git_commit']}.",
      "",
      "Conditions: `residual` x + f(LN(x)); `no_residual` f(LN(x)); `scaled_residual` "
      "x + f(LN(x))/√depth. For each depth the conditions share weights and batches "
      "(same seed keys), so differences are paired per seed. Continuity: mean over tokens "
      "of the cosine between the representation and the token's own embedding. Rank "
      "collapse: ||X − 1x̄ᵀ||_F / ||X||_F per sequence (0: all tokens identical). "
      "Gradients: of the selection-task loss, per matrix. Effects: mean ± std across seeds "
      "and the 95% bootstrap CI of the mean (expanded percentile); *supported* when the "
      "CI lies on the claimed side, *not supported* when on the other, *inconclusive* "
      "otherwise.",
      "",
      "Scope: everything here is at initialization, where the articles' claims are about "
      "trained models; it shows what the architecture does to a token before any "
      "learning. Without skips, once the tokens have collapsed (rank-collapse measure "
      "~1e-7) the W_Q and W_K gradients sit at float32 round-off: their exact value is 0 "
      "(all scores in a row are equal, so the softmax does not depend on W_Q or W_K), so "
      "the size of the log10 ratio there reflects the precision, not a rate.",
      "",
      "## Claims", "",
  ] + report.claims_table(summary["claims"]) + ["", "## Quotes tested", ""]
  lines += report.quote_lines(summary["claims"])
  lines += ["", "## Figures", ""]
  lines += report.figure_lines(figures)
  lines += ["## At initialization, per condition and depth", "",
            "| condition | depth | cos(last rep., embedding) | rank collapse (last rep.) | "
            "log10 Q/K-to-V grad ratio | seeds |", "|---|---|---|---|---|---|"]
  for c in conds:
    for d in ds:
      e = summary["at_init"][f"{c}/depth{d}"]
      lines.append(f"| {c} | {d} | {report.effect_cell(e['embed_cos_last'])} | "
                   f"{report.effect_cell(e['rank_collapse_last'])} | "
                   f"{report.effect_cell(e['log10_qk_to_v_grad'])} | "
                   f"{e['embed_cos_last']['n']} |")
  lines += report.redraw_lines(run_dir)
  results.write_atomic(run_dir / "report.md", "\n".join(lines))


def finish(run_dir: pathlib.Path) -> None:
  """Summary, figures and report from the saved files alone."""
  run_dir = pathlib.Path(run_dir)
  saved, config, rows = results.load_run(run_dir)
  summary = summarize(rows, config)
  results.write_json(run_dir / "summary.json", summary)
  figures = {
      "Continuity with the token embedding":
          plotting.save(profile_figure(rows, config, "embed_cos",
                                       "cos(representation, token embedding)",
                                       "Does a token stay continuous with its embedding?"),
                        run_dir, "continuity"),
      "Rank collapse":
          plotting.save(profile_figure(rows, config, "rank_collapse",
                                       "||X − 1x̄ᵀ|| / ||X||",
                                       "Do the tokens collapse to one vector?"),
                        run_dir, "rank_collapse"),
      "Q/K-to-V gradient ratio":
          plotting.save(grad_ratio_figure(rows, config), run_dir, "grad_ratio"),
      "Per-matrix gradient norms against depth":
          plotting.save(grad_norms_figure(rows, config), run_dir, "grad_norms_vs_depth"),
  }
  write_report(run_dir, saved, summary, figures, config)

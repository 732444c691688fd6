"""The figure kit: paper-style figures drawn from saved runs only.

Every figure comparing conditions shows the mean across seeds with a band of
one standard deviation and states the seed count (``seed_note``). W_Q, W_K,
W_V, W_O keep one colour each in every figure (``MATRIX_COLORS``), and a
study's conditions keep theirs (``condition_colors``).
"""

from __future__ import annotations

import io
import pathlib
import warnings
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from qkvjax import results  # pylint: disable=wrong-import-position

MATRIX_COLORS = {"query": "#1f77b4", "key": "#ff7f0e", "value": "#2ca02c",
                 "out": "#d62728"}
MATRIX_LABELS = {"query": "$W_Q$", "key": "$W_K$", "value": "$W_V$", "out": "$W_O$"}
QKV = ("query", "key", "value")

plt.rcParams.update({
    "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 9,
    "axes.labelsize": 9, "legend.fontsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "lines.linewidth": 1.5,
})


def save(fig, run_dir: pathlib.Path, name: str) -> str:
  """Writes ``name.png`` and ``name.pdf`` atomically; returns the PNG name."""
  for ext in ("png", "pdf"):
    buf = io.BytesIO()
    fig.savefig(buf, format=ext, bbox_inches="tight")
    results.write_atomic(pathlib.Path(run_dir) / f"{name}.{ext}", buf.getvalue())
  plt.close(fig)
  return f"{name}.png"


def nan_mean_std(x, axis=0):
  """Mean and std ignoring NaNs (diverged seeds), without all-NaN warnings."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmean(x, axis), np.nanstd(x, axis)


def seeds_counted(values) -> int:
  """Seeds with at least one finite value: rows of [seeds, N], entries of [seeds]."""
  x = np.asarray(values, float)
  return int(np.sum(np.isfinite(x))) if x.ndim == 1 else int(np.sum(np.any(np.isfinite(x), 1)))


def band(ax, x, values_SxN, color, label, log=False) -> int:
  """Mean across seeds with a ±1 std band; NaNs (diverged) are skipped.
  Returns the number of seeds drawn."""
  mean, std = nan_mean_std(values_SxN)
  ax.plot(x, mean, color=color, label=label)
  lo, hi = mean - std, mean + std
  if log:
    lo = np.maximum(lo, mean * 0.05)
  ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
  if log:
    ax.set_yscale("log")
  return seeds_counted(values_SxN)


def seed_note(fig, n: int, extra: str = "") -> None:
  """The seed count every comparing figure states."""
  text = f"mean ± 1 std over {n} seeds" + (f"; {extra}" if extra else "")
  fig.text(0.99, 0.005, text, ha="right", va="bottom", fontsize=7, color="0.4")


def condition_colors(names: Sequence[str]) -> dict[str, str]:
  """One colour per condition, in order, the same in every figure of a run."""
  cmap = plt.get_cmap("tab10")
  return {n: matplotlib.colors.to_hex(cmap(i % 10)) for i, n in enumerate(names)}


def incomplete_note(fig, run: results.Run) -> None:
  """Marks a figure drawn from an interrupted run."""
  if run.saved.get("status", "complete") != "complete":
    fig.text(0.01, 0.995, "INCOMPLETE RUN: drawn from what was logged", ha="left",
             va="top", fontsize=8, color="#d62728", weight="bold")


def per_site_matrices(run: results.Run, prefix: str, sites: Sequence[str],
                      names: Sequence[str], ylabel: str, title: str, log: bool = False,
                      **where):
  """One panel per attention site: ``prefix/<site>/<matrix>`` over training,
  one band per matrix."""
  fig, axes = plt.subplots(1, len(sites), figsize=(3.2 * len(sites), 2.6), squeeze=False,
                           sharey=True)
  n = 0
  for ax, site in zip(axes[0], sites):
    for name in names:
      key = f"{prefix}/{site}/{name}"
      if not run.has(key, **where):
        continue  # a tied or absent projection
      steps, vals = run.table(key, **where)
      n = band(ax, steps, vals, MATRIX_COLORS.get(name), MATRIX_LABELS.get(name, name),
               log=log)
    ax.set_title(site)
    ax.set_xlabel("step")
  axes[0][0].set_ylabel(ylabel)
  axes[0][-1].legend(frameon=False)
  fig.suptitle(title, y=1.02)
  seed_note(fig, n)
  return fig


def per_seed_dots(ax, values: dict[str, np.ndarray], colors: dict[str, str],
                  labels: dict[str, str] | None = None, censor: float | None = None):
  """Per condition, one dot per seed (hollow where ``>= censor``) and mean ± std."""
  names = list(values)
  for i, name in enumerate(names):
    v = np.asarray(values[name], float)
    x = i + np.linspace(-0.15, 0.15, len(v))
    cens = np.zeros_like(v, bool) if censor is None else v >= censor
    ax.scatter(x[~cens], v[~cens], s=10, color=colors[name], alpha=0.7)
    ax.scatter(x[cens], v[cens], s=10, facecolors="none", edgecolors=colors[name])
    mean, std = nan_mean_std(v)
    ax.errorbar(i + 0.3, mean, yerr=std, fmt="o", color=colors[name], ms=4, capsize=2)
  ax.set_xticks(range(len(names)), [(labels or {}).get(n, n) for n in names], rotation=25,
                ha="right", fontsize=7)


def attention_maps(weights_HxTxS, tokens_q: Sequence[str], tokens_k: Sequence[str], axes,
                   titles: Sequence[str], box: tuple[int, int] | None = None,
                   signed: bool = False):
  """One heatmap per head (rows: queries, columns: keys); ``box`` outlines
  (query, key); ``signed`` draws scores with a diverging map."""
  for h, ax in enumerate(axes):
    mat = np.asarray(weights_HxTxS[h])
    if signed:
      lim = np.max(np.abs(mat)) + 1e-9
      ax.imshow(mat, cmap="RdBu_r", vmin=-lim, vmax=lim)
    else:
      ax.imshow(mat, vmin=0, vmax=1, cmap="Blues")
    if box is not None:
      ax.add_patch(plt.Rectangle((box[1] - 0.5, box[0] - 0.5), 1, 1, fill=False,
                                 edgecolor="#d62728", lw=1.5))
    ax.set_xticks(range(len(tokens_k)), tokens_k, rotation=90, fontsize=6)
    ax.set_yticks(range(len(tokens_q)), tokens_q if h == 0 else [""] * len(tokens_q),
                  fontsize=6)
    ax.set_title(titles[h], fontsize=7)


def attention_sample_figure(sample: dict, vocab: Sequence[str], target_key: str | None,
                            title: str):
  """Every site's attention on a saved sample sequence (``samples.json``):
  rows are sites, columns heads; the last query's ground-truth key boxed."""
  sites = list(sample["sites"])
  tokens = [vocab[t] for t in sample["inputs"][0]]
  n_heads = np.asarray(sample["sites"][sites[0]]["weights"]).shape[0]
  fig, axes = plt.subplots(len(sites), n_heads, squeeze=False,
                           figsize=(2.0 * n_heads, 2.0 * len(sites) + 0.4))
  t = len(tokens)
  box = None if target_key is None else (t - 1, sample["ground_truth"][target_key])
  for row, site in zip(axes, sites):
    attention_maps(sample["sites"][site]["weights"], tokens, tokens, row,
                   [f"{site} H{h}" for h in range(n_heads)], box)
  fig.suptitle(title + "\nrows: query position, columns: key position", fontsize=8, y=1.02)
  fig.tight_layout()
  return fig

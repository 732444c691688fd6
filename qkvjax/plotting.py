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
from qkvjax.attention import QKV  # pylint: disable=wrong-import-position

MATRIX_COLORS = {"query": "#1f77b4", "key": "#ff7f0e", "value": "#2ca02c",
                 "out": "#d62728"}
MATRIX_LABELS = {"query": "$W_Q$", "key": "$W_K$", "value": "$W_V$", "out": "$W_O$"}

plt.rcParams.update({
    "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 9,
    "axes.labelsize": 9, "legend.fontsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "lines.linewidth": 1.5,
})


# The file formats every figure is saved in (``--figure_formats``); empty: no
# figures are drawn (a large sweep can draw them later with --exp=figures).
FORMATS: tuple[str, ...] = ("png", "pdf")
ACCEPTED_FORMATS = ("png", "pdf", "svg")


def set_formats(text: str) -> None:
  """``--figure_formats``: comma-separated formats among ACCEPTED_FORMATS, or
  'none'. Raises config.ConfigError naming the bad value."""
  from qkvjax import config as config_lib  # pylint: disable=g-import-not-at-top
  global FORMATS
  if text.strip() == "none":
    FORMATS = ()
    return
  formats = config_lib.parse_list("--figure_formats", text, str)
  bad = [f for f in formats if f not in ACCEPTED_FORMATS]
  if bad:
    raise config_lib.ConfigError(f"--figure_formats={text!r}: unknown format {bad[0]!r}; "
                                 f"accepted: comma-separated {', '.join(ACCEPTED_FORMATS)}, "
                                 "or none")
  FORMATS = formats


def save(fig, run_dir: pathlib.Path, name: str) -> str | None:
  """Writes the figure in every format of FORMATS atomically; returns the
  first file's name (None, writing nothing, when FORMATS is empty)."""
  if FORMATS:
    clear_notes(fig)
  for ext in FORMATS:
    buf = io.BytesIO()
    fig.savefig(buf, format=ext, bbox_inches="tight")
    results.write_atomic(pathlib.Path(run_dir) / f"{name}.{ext}", buf.getvalue())
  plt.close(fig)
  return f"{name}.{FORMATS[0]}" if FORMATS else None


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
  fig.text(0.99, 0.005, text, ha="right", va="bottom", fontsize=7, color="0.4",
           gid=NOTE_GID)


NOTE_GID = "qkvjax-note"  # figure notes kept clear of the axes' text by ``save``


def clear_notes(fig) -> None:
  """Grows the figure at the bottom until its notes (``seed_note``) overlap no
  other text (tick labels, axis labels), the axes and figure texts moved up."""
  from matplotlib.layout_engine import PlaceHolderLayoutEngine  # pylint: disable=g-import-not-at-top
  from matplotlib.text import Text  # pylint: disable=g-import-not-at-top
  notes = [t for t in fig.texts if t.get_gid() == NOTE_GID]
  engine = fig.get_layout_engine()  # a placeholder after tight_layout: it moves nothing
  if not notes or not isinstance(engine, (type(None), PlaceHolderLayoutEngine)):
    return
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  others = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
            and t.get_gid() != NOTE_GID]
  top = max(t.get_window_extent(renderer).y1 for t in notes) + 3
  low = min((t.get_window_extent(renderer).y0 for t in others), default=top)
  if low >= top:
    return
  height = fig.get_figheight() * fig.dpi
  grown = height + (top - low)
  lift = lambda y: (y * height + (top - low)) / grown
  for ax in fig.axes:
    box = ax.get_position()
    ax.set_position([box.x0, lift(box.y0), box.width, box.height * height / grown])
  for t in fig.texts:
    if t.get_gid() != NOTE_GID and t.get_transform() == fig.transFigure:
      t.set_y(lift(t.get_position()[1]))
  fig.set_figheight(grown / fig.dpi)


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
                      colors: dict | None = None, labels: dict | None = None,
                      titles: dict | None = None, hline: float | None = None,
                      ylim=None, **where):
  """One panel per attention site: ``prefix/<site>/<name>`` over training, one
  band per name (a matrix's colour and label unless ``colors``/``labels``
  say otherwise); ``hline`` draws a dotted reference level."""
  colors, labels = {**MATRIX_COLORS, **(colors or {})}, {**MATRIX_LABELS, **(labels or {})}
  fig, axes = plt.subplots(1, len(sites), figsize=(3.2 * len(sites), 2.6), squeeze=False,
                           sharey=True)
  n = 0
  for ax, site in zip(axes[0], sites):
    for name in names:
      key = f"{prefix}/{site}/{name}"
      if not run.has(key, **where):
        continue  # a tied or absent projection
      steps, vals = run.table(key, **where)
      n = max(n, band(ax, steps, vals, colors.get(name), labels.get(name, name), log=log))
    if hline is not None:
      ax.axhline(hline, color="0.5", ls=":", lw=1)
    ax.set(title=(titles or {}).get(site, site), xlabel="step")
    if ylim is not None:
      ax.set_ylim(*ylim)
  axes[0][0].set_ylabel(ylabel)
  axes[0][-1].legend(frameon=False)
  fig.suptitle(title, y=1.02)
  seed_note(fig, n)
  return fig


def spectra_figure(run: results.Run, sites: Sequence[str], titles: dict | None = None,
                   **where):
  """Singular values of W_Q, W_K, W_V per site: dashed at step 0, solid at the end."""
  fig, axes = plt.subplots(1, len(sites), figsize=(3.2 * len(sites), 2.6), squeeze=False,
                           sharey=True)
  n = 0
  for ax, site in zip(axes[0], sites):
    for name in QKV:
      for index, ls, suffix in ((0, "--", " init"), (-1, "-", " end")):
        s = run.spectrum(f"{site}/{name}", index, **where)
        n = max(n, band(ax, np.arange(1, s.shape[1] + 1), s, MATRIX_COLORS[name],
                        MATRIX_LABELS[name] + suffix, log=True))
        ax.lines[-1].set_linestyle(ls)
    ax.set(title=(titles or {}).get(site, site), xlabel="singular value index")
  axes[0][0].set_ylabel("singular value")
  axes[0][-1].legend(frameon=False, fontsize=7, ncol=2)
  fig.suptitle("Spectra of $W_Q, W_K, W_V$: dashed at init, solid at the end", y=1.02)
  seed_note(fig, n)
  return fig


def band_grid(run: results.Run, panels, groups: dict[str, dict[str, str]],
              colors: dict[str, str], labels: dict[str, str] | None = None,
              height: float = 2.2, width: float = 4.0, log: bool = False):
  """Rows: ``panels`` [(y label, metric key or function condition -> [seeds,
  steps])]; columns: ``groups`` {title: {series: condition}}; one band per
  series, coloured ``colors[series]``. Returns the figure (axes in
  ``fig.axes``, row-major)."""
  fig, axes = plt.subplots(len(panels), len(groups), squeeze=False, sharex="col",
                           figsize=(width * len(groups), height * len(panels)))
  n = 0
  for j, (title, series) in enumerate(groups.items()):
    axes[0][j].set_title(title)
    for i, (ylabel, what) in enumerate(panels):
      for name, cond in series.items():
        steps = run.table("loss", condition=cond)[0]
        vals = run.table(what, condition=cond)[1] if isinstance(what, str) else what(cond)
        n = max(n, band(axes[i][j], steps, vals, colors[name], (labels or {}).get(name, name),
                        log=log))
      axes[i][0].set_ylabel(ylabel)
    axes[-1][j].set_xlabel("step")
  axes[0][-1].legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  fig.tight_layout()
  seed_note(fig, n)
  return fig


def dots_grid(panels, groups: dict[str, dict[str, str]], colors: dict[str, str],
              labels: dict[str, str] | None = None, censor: float | None = None,
              height: float = 2.6, width: float = 4.0):
  """Rows: ``panels`` [(y label, function condition -> [seeds])]; columns:
  ``groups`` {title: {series: condition}}; per series one dot per seed (hollow
  at or past ``censor``) and mean ± std."""
  fig, axes = plt.subplots(len(panels), len(groups), squeeze=False,
                           figsize=(width * len(groups), height * len(panels)))
  n = 0
  for j, (title, series) in enumerate(groups.items()):
    axes[0][j].set_title(title)
    for i, (ylabel, fn) in enumerate(panels):
      values = {name: fn(cond) for name, cond in series.items()}
      per_seed_dots(axes[i][j], values, colors, labels, censor if i == 0 else None)
      n = max([n] + [seeds_counted(v) for v in values.values()])
      axes[i][0].set_ylabel(ylabel)
  fig.tight_layout()
  seed_note(fig, n, "dots: seeds")
  return fig


def seed_heatmaps(matrices: dict[str, np.ndarray], xticks: Sequence[str], title: str,
                  cmap: str = "Blues", vmax: float | None = None):
  """Rows: conditions; columns: seeds; each cell a [rows, columns] heatmap of
  one seed (``matrices[condition]`` is [seeds, rows, columns])."""
  conds = list(matrices)
  seeds = max(m.shape[0] for m in matrices.values())
  heights = [matrices[c].shape[1] + 2 for c in conds]
  fig, axes = plt.subplots(len(conds), seeds + 1, squeeze=False, figsize=(
      1.0 * seeds + 1.2, 0.32 * sum(heights) + 0.8), gridspec_kw={
          "height_ratios": heights, "width_ratios": [1] * seeds + [0.15]})
  for i, cond in enumerate(conds):
    m = matrices[cond]
    top = vmax if vmax is not None else max(float(np.nanmax(m)), 1e-6)
    for s, ax in enumerate(axes[i][:-1]):
      im = ax.imshow(m[s], cmap=cmap, vmin=0, vmax=top, aspect="auto")
      ax.set_xticks(range(len(xticks)), xticks if i == len(conds) - 1 else [""] * len(xticks),
                    fontsize=6)
      ax.set_yticks(range(m.shape[1]), [f"H{j}" if s == 0 else "" for j in range(m.shape[1])],
                    fontsize=5)
      ax.set_title(f"seed {s}" if i == 0 else "", fontsize=7)
      ax.set_ylabel(cond if s == 0 else "", fontsize=7)
    fig.colorbar(im, cax=axes[i][-1]).ax.tick_params(labelsize=5)
  fig.suptitle(title, fontsize=8, y=1.0)
  fig.text(0.99, 0.0, f"one panel per seed, {seeds} seeds", ha="right", fontsize=7, color="0.4")
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


def sample_grid(samples: dict, rows: dict[str, dict[str, str]], vocab: dict[str, Sequence[str]],
                site: str, what: str = "weights", title: str = ""):
  """One saved sample sequence (``samples.json``) per condition: rows
  ``{title: {label: condition}}``, a column per (label, head) of attention
  ``site``; ``what`` is "weights" or (signed) "logits"; the last query's
  ground-truth key (``target_pos_B``) boxed."""
  first = samples[next(iter(next(iter(rows.values())).values()))]
  heads = np.asarray(first["sites"][site][what]).shape[0]
  cols = max(len(r) for r in rows.values()) * heads
  fig, axes = plt.subplots(len(rows), cols, squeeze=False,
                           figsize=(1.9 * cols, 2.7 * len(rows) + 0.5))
  for i, (row_title, series) in enumerate(rows.items()):
    for j, (label, cond) in enumerate(series.items()):
      s = samples[cond]
      tokens = [vocab[cond][x] for x in s["inputs"][0]]
      attention_maps(s["sites"][site][what], tokens, tokens, axes[i][j * heads:(j + 1) * heads],
                     [f"{row_title}\n{label}, head {h}" for h in range(heads)],
                     (len(tokens) - 1, s["ground_truth"]["target_pos_B"]),
                     signed=what == "logits")
  fig.suptitle(title, fontsize=8, y=1.0)
  fig.tight_layout()
  return fig


def layer_head_heatmaps(grids: dict[str, tuple], rows: Sequence[str], title: str,
                        ncols: int | None = None, annotate: bool = False, note: str = ""):
  """One panel per entry ``{title: ([layers, heads] values, vmin, vmax, cmap)}``:
  layers down, heads across, each with its colour bar, ``ncols`` panels a
  row; ``annotate`` writes each cell's value; ``note`` says what a cell is."""
  ncols = ncols or len(grids)
  nrows = -(-len(grids) // ncols)
  fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                           figsize=(3.3 * ncols, (0.35 * len(rows) + 1.6) * nrows))
  for ax, (name, (values, lo, hi, cmap)) in zip(axes.ravel(), grids.items()):
    im = ax.imshow(values, vmin=lo, vmax=hi, cmap=cmap, aspect="auto")
    heads = range(np.shape(values)[1])
    ax.set(title=name, xlabel="head", xticks=heads, xticklabels=[f"H{h}" for h in heads],
           yticks=range(len(rows)), yticklabels=rows)
    fig.colorbar(im, ax=ax, shrink=0.8)
    for (y, x), v in np.ndenumerate(values if annotate else np.zeros((0, 0))):
      ax.text(x, y, f"{v:.2f}", ha="center", va="center", fontsize=6)
  for row in axes:
    row[0].set_ylabel("layer")
  for ax in axes.ravel()[len(grids):]:
    ax.axis("off")
  fig.suptitle(title, y=1.0)
  fig.tight_layout()
  if note:
    fig.text(0.99, 0.005, note, ha="right", va="bottom", fontsize=7, color="0.4", gid=NOTE_GID)
  return fig


def seed_curves(ax, x, values_SxN, color, label) -> int:
  """Every seed's curve (thin) and their mean (thick), on one step axis;
  NaNs (diverged) are skipped. Returns the number of seeds drawn."""
  values_SxN = np.asarray(values_SxN, float)
  for row in values_SxN:
    ax.plot(x, row, color=color, lw=0.6, alpha=0.35)
  mean, _ = nan_mean_std(values_SxN)
  ax.plot(x, mean, color=color, lw=1.8, label=label)
  return seeds_counted(values_SxN)


def model_spectra(spectra: dict[str, dict[str, Sequence[float]]]):
  """The singular values of one model (no seeds): a panel per site of
  ``spectra`` {site: {matrix: values, largest first}}, a line per matrix
  (``MATRIX_COLORS``) on a log axis."""
  fig, axes = plt.subplots(1, len(spectra), figsize=(2.2 * len(spectra), 2.4),
                           sharey=True, squeeze=False)
  for ax, (site, by_matrix) in zip(axes[0], spectra.items()):
    for name, sv in by_matrix.items():
      ax.semilogy(np.arange(1, len(sv) + 1), sv, color=MATRIX_COLORS[name],
                  label=MATRIX_LABELS[name])
    ax.set(title=site, xlabel="index")
  axes[0][0].set_ylabel("singular value")
  axes[0][-1].legend(frameon=False)
  return fig

def pca_grid(coords: dict[str, np.ndarray], rows: dict[str, str], cols: dict[str, str],
             classes, class_labels: Sequence[str], colors: Sequence[str], title: str):
  """Saved 2-D coordinates of vectors (``coords["<column>/<row>"]`` [N, 2],
  such as ``sample_kinds.qkv_pca``'s): rows ``{row: y label}``, columns
  ``{column: title}``, one colour per class (``classes`` [N] indexes
  ``class_labels``), the same square limits everywhere."""
  fig, axes = plt.subplots(len(rows), len(cols), squeeze=False,
                           figsize=(2.4 * len(cols), 2.2 * len(rows)))
  classes = np.asarray(classes)
  lim = 1.1 * max(1e-3, max(np.max(np.abs(c)) for c in coords.values()))
  cells = [(i, j) for i in enumerate(rows.items()) for j in enumerate(cols.items())]
  for (r, (row, ylabel)), (c, (col, col_title)) in cells:
    xy, ax = np.asarray(coords[f"{col}/{row}"]), axes[r][c]
    for k, label in enumerate(class_labels):
      ax.scatter(*xy[classes == k].T, s=8, alpha=0.6, color=colors[k], label=label)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
           title=col_title if r == 0 else "", ylabel=ylabel if c == 0 else "")
    ax.tick_params(labelsize=6)
  axes[0][-1].legend(frameon=False, fontsize=6, loc="upper right")
  fig.suptitle(title, fontsize=8, y=1.0)
  fig.tight_layout()
  return fig


def alignment_grid(items: Sequence[dict], queries: str, keys: str, title: str):
  """Saved attention of one seed on sample pairs: rows ``items`` (each with
  ``weights_LxHxTxS`` and its query and key tokens under ``queries`` and
  ``keys``), a column per (layer, head), the most-attended key of each query
  dotted."""
  n_layers, n_heads = np.asarray(items[0]["weights_LxHxTxS"]).shape[:2]
  fig, axes = plt.subplots(len(items), n_layers * n_heads, squeeze=False,
                           figsize=(1.7 * n_layers * n_heads, 1.9 * len(items) + 0.5))
  for row, item in zip(axes, items):
    w_LxHxTxS = np.asarray(item["weights_LxHxTxS"])
    for l in range(n_layers):
      cols = row[l * n_heads:(l + 1) * n_heads]
      attention_maps(w_LxHxTxS[l], item[queries], item[keys], cols,
                     [f"L{l} H{h}" for h in range(n_heads)])
      for ax, w_TxS in zip(cols, w_LxHxTxS[l]):
        ax.set_aspect("auto")
        ax.plot(np.argmax(w_TxS, -1), np.arange(len(w_TxS)), "o", color="#d62728", ms=2)
  fig.suptitle(title, fontsize=8, y=1.0)
  fig.tight_layout()
  return fig


def named_dots(ax, values, names: Sequence[str], level: float, level_label: str, **settings):
  """One dot per seed, ticked with the seed over its name (what the seed's
  value is of), and a red dashed ``level`` (a threshold); ``settings`` go to ``ax.set``."""
  ax.scatter(np.arange(len(values)), values, color="k", zorder=3)
  ax.axhline(level, color="#d62728", ls="--", lw=1, label=level_label)
  ax.set_xticks(range(len(values)), [f"{i}\n{w}" for i, w in enumerate(names)], fontsize=6)
  ax.set(**settings)
  ax.legend(frameon=False, fontsize=7)

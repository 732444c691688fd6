"""Figure kinds a study declares instead of drawing: each builds a
``study.Figure`` from what differs between studies (metric keys, sites,
conditions, labels), and draws it from the saved run with the kit in
``plotting`` (bands of mean ± 1 std over seeds, the seed count stated).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from qkvjax import effects
from qkvjax import plotting
from qkvjax import results
from qkvjax.study import Figure

RIGHT = {"loc": "center left", "bbox_to_anchor": (1.02, 0.5)}  # a legend beside the axes


@dataclasses.dataclass(frozen=True)
class Line:
  """One band: ``values`` a metric key (against the logged steps) or a
  function of the run -> ``(x, [seeds, len(x)])``; ``where`` selects rows."""
  values: str | Callable[[results.Run], tuple]
  color: Any
  label: str | None
  where: dict = dataclasses.field(default_factory=dict)
  ls: str = "-"


@dataclasses.dataclass(frozen=True)
class Ref:
  """A grey reference level (``label`` None: left out of the legend)."""
  y: float
  label: str | None = None
  ls: str = ":"


@dataclasses.dataclass(frozen=True)
class Panel:
  """One axes of bands. ``legend``: None, "best" or "right" (beside it);
  ``xticks``: the x ticks (on a log2 axis with ``xlog2``: depths)."""
  lines: Sequence[Line]
  ylabel: str = ""
  title: str = ""
  xlabel: str = "step"
  log: bool = False
  ylim: tuple | None = None
  refs: Sequence[Ref] = ()
  legend: str | None = None
  xticks: Sequence[int] | None = None
  xlog2: bool = False


def draw_panels(run: results.Run, grid: Sequence[Sequence[Panel | None]], suptitle: str = "",
                note: str = "", width: float = 3.2, height: float = 2.6,
                sharey: bool = False):
  """A grid of ``Panel`` rows (None: an empty cell), then the seed note."""
  cols = max(len(row) for row in grid)
  fig, axes = plotting.plt.subplots(len(grid), cols, figsize=(width * cols, height * len(grid)),
                                    squeeze=False, sharey=sharey)
  n = 0
  for (i, j), ax in np.ndenumerate(axes):
    panel = grid[i][j] if j < len(grid[i]) else None
    if panel is None:
      ax.axis("off")
      continue
    for line in panel.lines:
      x, values = (run.table(line.values, **line.where) if isinstance(line.values, str)
                   else line.values(run))
      n = max(n, plotting.band(ax, x, values, line.color, line.label, log=panel.log))
      ax.lines[-1].set_linestyle(line.ls)
    for ref in panel.refs:
      ax.axhline(ref.y, color="0.5", ls=ref.ls, lw=1, label=ref.label)
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)
    if panel.ylim is not None:
      ax.set_ylim(*panel.ylim)
    if panel.xlog2:
      ax.set_xscale("log", base=2)
    if panel.xticks is not None:
      ax.set_xticks(panel.xticks, [str(t) for t in panel.xticks])
    if panel.legend:
      ax.legend(frameon=False, fontsize=7, **(RIGHT if panel.legend == "right" else {}))
  if suptitle:
    fig.suptitle(suptitle, y=1.02)
  fig.tight_layout()
  plotting.seed_note(fig, n, note)
  return fig


def curves(title: str, name: str, grid: Callable[[results.Run], list], **options) -> Figure:
  """Bands in a grid of panels: ``grid(run)`` is a list of rows of ``Panel``
  (a row may be one ``Panel``); ``options`` go to ``draw_panels``."""
  return Figure(title, name, lambda r: draw_panels(
      r, [row if isinstance(row, (list, tuple)) else [row] for row in grid(r)], **options))


def site_curves(title: str, name: str, prefix: str, names: Sequence[str], ylabel: str,
                suptitle: str, log: bool = False,
                sites: Callable[[results.Run], list[str]] = effects.layers, **options) -> Figure:
  """Per attention site, ``prefix/<site>/<name>`` over training, a band per
  name (``plotting.per_site_matrices``)."""
  return Figure(title, name, lambda r: plotting.per_site_matrices(
      r, prefix, sites(r), names, ylabel, suptitle, log, **options))


def spectra(sites: Callable[[results.Run], list[str]] = effects.layers) -> Figure:
  """Singular values of W_Q, W_K, W_V per site, at step 0 and at the end."""
  return Figure("Singular-value spectra at initialization and at the end", "spectra",
                lambda r: plotting.spectra_figure(r, sites(r)))


@dataclasses.dataclass(frozen=True)
class DotRow:
  """A row of per-seed dots: ``values(condition)`` -> [seeds]."""
  ylabel: str
  values: Callable[[str], np.ndarray]
  refs: Sequence[Ref] = ()
  ylim: tuple | None = None


def dots(title: str, name: str, rows: Callable[[results.Run], list[DotRow]],
         groups: Callable[[results.Run], dict[str, dict[str, str]]], colors: dict,
         labels: dict | None = None, censor: Callable | None = None, **options) -> Figure:
  """Rows ``DotRow``; columns ``groups(run)`` {title: {series: condition}};
  one dot per seed (hollow at or past ``censor(run)``), mean ± std."""
  def draw(run):
    spec, cols = rows(run) if callable(rows) else rows, groups(run)
    fig = plotting.dots_grid([(r.ylabel, r.values) for r in spec], cols, colors, labels,
                             censor(run) if censor else None, **options)
    for k, ax in enumerate(fig.axes):
      row = spec[k // len(cols)]
      for ref in row.refs:
        ax.axhline(ref.y, color="0.5", ls=ref.ls, lw=1, label=ref.label)
      if row.ylim is not None:
        ax.set_ylim(*row.ylim)
    return fig
  return Figure(title, name, draw)


@dataclasses.dataclass(frozen=True)
class BandRow:
  """A row of bands: ``values`` a metric key (as logged, else its layer mean:
  ``effects.metric``) or ``condition -> [seeds, steps]``; ``refs(column
  index)`` the grey levels of each column's axes; ``title`` (if given)
  replaces the column title on this row's axes."""
  ylabel: str
  values: str | Callable[[str], np.ndarray]
  refs: Callable[[int], Sequence[Ref]] = lambda j: ()
  ylim: tuple | None = None
  title: str | None = None
  linear: bool = False


def bands(title: str, name: str,
          rows: Sequence[BandRow] | Callable[[results.Run], list[BandRow]],
          groups: Callable[[results.Run], dict[str, dict[str, str]]], colors: dict,
          labels: dict | None = None, suptitle: Callable[[results.Run], str] | None = None,
          **options) -> Figure:
  """Rows ``BandRow`` (or ``rows(run)``); columns ``groups(run)`` {title:
  {series: condition}}; a band per series over training
  (``plotting.band_grid``), the legend beside the top right axes; ``options``
  go to ``band_grid``."""
  def draw(run):
    spec, cols = rows(run) if callable(rows) else rows, groups(run)
    read = lambda key: lambda c: effects.metric(run, key, condition=c)
    fig = plotting.band_grid(run, [(r.ylabel, read(r.values) if isinstance(r.values, str)
                                    else r.values) for r in spec], cols, colors, labels, **options)
    for k, ax in enumerate(fig.axes):
      row, j = spec[k // len(cols)], k % len(cols)
      for ref in row.refs(j):
        ax.axhline(ref.y, color="0.5", ls=ref.ls, lw=1, label=ref.label)
      if row.ylim is not None:
        ax.set_ylim(*row.ylim)
      if row.title is not None:
        ax.set_title(row.title)
      if row.linear:
        ax.set_yscale("linear")
    fig.axes[len(cols) - 1].legend(frameon=False, fontsize=7, loc="center left",
                                   bbox_to_anchor=(1.0, 0.5))
    if suptitle:
      fig.suptitle(suptitle(run), y=1.02)
    fig.tight_layout()
    return fig
  return Figure(title, name, draw)


def sample_maps(run: results.Run, rows: dict[str, dict[str, str]], vocab: dict, site: str,
                caption: str, scores: str) -> list[Figure]:
  """Score matrices (``scores`` says what they are) and attention weights at
  ``site`` on one saved sample per condition (``study.attention_samples``;
  none without samples): rows {title: {label: condition}}, ``vocab``
  {condition: tokens} (``plotting.sample_grid``); ``caption`` is formatted
  with ``what`` and ``seeds``."""
  samples = run.file("samples.json")
  seeds = ", ".join(map(str, sorted({s["seed"] for s in (samples or {}).values()})))
  return [Figure(f"{title} on a sample sequence", name, lambda r, what=what, text=text: (
      plotting.sample_grid(samples, rows, vocab, site, what,
                           caption.format(what=text, seeds=seeds))))
          for title, name, what, text in (
              ("Score matrices", "score_matrices", "logits", scores),
              ("Attention weights", "attention_maps", "weights", "attention weights"))
          if samples]


def over_sizes(sizes: Sequence[int], fn: Callable) -> Callable[[results.Run], tuple]:
  """``Line`` values against model sizes (depths, widths): per size n of
  ``sizes``, ``fn(run, n)`` [seeds]."""
  return lambda run: (np.array(sizes), np.stack([fn(run, n) for n in sizes], 1))


def profile_and_sweep(title: str, name: str, along: Callable, after: Callable | None,
                      sizes: Callable[[results.Run], Sequence[int]],
                      series: Callable[[results.Run], Sequence[str]], colors: dict,
                      labels: dict, ylabel: str, left: tuple[str, str], right: str,
                      xlabel: str, refs: Sequence[Ref] = (), **options) -> Figure:
  """Two panels sharing the y axis, a band per series s of ``series(run)``:
  left, ``along(run, s, n)`` [seeds, k] against 0 .. k - 1 at the largest
  size n of ``sizes(run)`` (``left``: its x label and title, each formatted
  with n); right (titled ``right``), ``after(run, s, size)`` [seeds] (None:
  the profile's last point) against every size on a log2 axis labelled
  ``xlabel``. ``options`` go to ``draw_panels``."""
  after = after or (lambda run, s, n: along(run, s, n)[:, -1])
  def profile(s, n):
    def values(run):
      v = along(run, s, n)
      return np.arange(v.shape[1]), v
    return values

  def grid(run):
    ns = sorted(sizes(run))
    lines = lambda fn: [Line(fn(s), colors[s], labels[s]) for s in series(run)]
    return [[Panel(lines(lambda s: profile(s, ns[-1])), ylabel, left[1].format(ns[-1]),
                   left[0].format(ns[-1]), refs=refs, legend="best"),
             Panel(lines(lambda s: over_sizes(ns, lambda r, n: after(r, s, n))),
                   title=right, xlabel=xlabel, refs=refs, xticks=ns, xlog2=True)]]
  return curves(title, name, grid, sharey=True, **options)


def matrices_over_sizes(title: str, name: str, fn: Callable,
                        sizes: Callable[[results.Run], Sequence[int]],
                        series: Callable[[results.Run], Sequence[str]], labels: dict,
                        ylabel: str, xlabel: str,
                        matrices: Sequence[str] = ("query", "key", "value", "out"),
                        **options) -> Figure:
  """A panel per series s of ``series(run)`` (titled ``labels[s]``), sharing
  the y axis: a band per matrix m of ``matrices`` (``plotting.MATRIX_COLORS``),
  ``fn(run, m, s, n)`` [seeds] against every size n of ``sizes(run)`` on
  log-log2 axes. ``options`` go to ``draw_panels``."""
  def grid(run):
    ns, ss = sorted(sizes(run)), list(series(run))
    return [[Panel([Line(over_sizes(ns, lambda r, n, s=s, m=m: fn(r, m, s, n)),
                         plotting.MATRIX_COLORS[m], plotting.MATRIX_LABELS[m])
                    for m in matrices], "" if i else ylabel, labels[s], xlabel, log=True,
                   legend="best" if i == len(ss) - 1 else None, xticks=ns, xlog2=True)
             for i, s in enumerate(ss)]]
  return curves(title, name, grid, sharey=True, **options)

def layer_profile(run: results.Run, prefix: str, names: Sequence[str], colors: dict,
                  labels: dict, ylabel: str, refs: Sequence[Ref] = (),
                  legend: str | None = None) -> Panel:
  """A ``Panel`` of ``prefix/L<l>/<name>`` against the layer (numbered from 1):
  per name, a band at step 0 (dashed, labelled "(step 0)") and at the end."""
  x = np.arange(1, run.config.model.n_layers + 1)
  at = lambda name, i: lambda r: (x, np.stack([r.table(f"{prefix}/L{l - 1}/{name}")[1][:, i]
                                               for l in x], 1))
  return Panel([Line(at(n, i), colors[n], labels[n] + tag, ls=ls) for n in names
                for i, ls, tag in ((0, "--", " (step 0)"), (-1, "-", ""))], ylabel,
               xlabel="layer", xticks=x, refs=refs, legend=legend)


def layer_heads(run: results.Run, prefix: str, best_label: str = "best head",
                cmap: str = "viridis") -> list[Line]:
  """Per layer ``l``, coloured by depth: a band of ``prefix/L<l>`` (the mean
  over heads, solid) and of the largest ``prefix/L<l>/H<h>`` (the best head,
  dashed, labelled ``best_label``)."""
  n, colors = run.config.model.n_layers, plotting.plt.get_cmap(cmap)
  best = lambda l: lambda r: (r.table(f"{prefix}/L{l}")[0], np.max(
      [r.table(k)[1] for k in r.keys(f"{prefix}/L{l}/H")], 0))
  return [Line(values, colors(l / max(1, n - 1)), f"layer {l + 1}: {what}", ls=ls)
          for l in range(n) for values, what, ls in (
              (f"{prefix}/L{l}", "mean over heads", "-"), (best(l), best_label, "--"))]


@dataclasses.dataclass(frozen=True)
class XRow:
  """A row of panels against a swept value: ``values(column, band)`` ->
  [seeds, len(x)], or a metric key for ``draw_against``'s ``read``; ``refs``
  grey levels; ``guide`` ``(band, power, label)``, a grey dotted curve ∝
  x^power through that band's mean at the first x, on the row's first panel
  (if the band is drawn)."""
  ylabel: str
  values: str | Callable[[Any, str], np.ndarray]
  log: bool = False
  refs: Sequence[Ref] = ()
  ylim: tuple | None = None
  guide: tuple | None = None


def draw_against(rows: Sequence[XRow], cols: dict, x: Sequence[float], xlabel: str,
                 bands: Sequence[tuple], title: str, note: str, read: Callable | None = None):
  """Rows ``XRow`` (a metric key ``values`` read as ``read(key, column,
  band)``); columns ``{title: column}``; a band per ``bands`` entry ``(band,
  colour, label)``; ``x`` (a swept value: d_k, a learning rate) on a log axis,
  ticked at its values; ``note`` follows the seed count."""
  fig, axes = plotting.plt.subplots(len(rows), len(cols), squeeze=False, sharex=True,
                                    figsize=(3.1 * len(cols) + 0.8, 2.2 * len(rows) + 0.4))
  n = 0
  for (i, j), ax in np.ndenumerate(axes):
    row, (col_title, col) = rows[i], list(cols.items())[j]
    values = (lambda c, b, k=row.values: read(k, c, b)) if isinstance(row.values, str) else (
        row.values)
    for band, color, label in bands:
      n = max(n, plotting.band(ax, x, values(col, band), color, label, row.log))
    ax.set(xscale="log", xticks=x, xticklabels=[f"{t:g}" for t in x],
           title=col_title if i == 0 else "", ylabel=row.ylabel if j == 0 else "",
           xlabel=xlabel if i == len(rows) - 1 else "")
    ax.minorticks_off()
    for ref in row.refs:
      ax.axhline(ref.y, color="0.5", ls=ref.ls, lw=1, label=ref.label)
    if row.ylim is not None:
      ax.set_ylim(*row.ylim)
    if row.guide is not None and j == 0 and row.guide[0] in [b[0] for b in bands]:
      band, power, label = row.guide
      y0 = np.nanmean(values(col, band)[:, 0])
      ax.plot(x, y0 * (np.asarray(x, float) / x[0]) ** power, color="0.5", ls=":", lw=1,
              label=label)
  axes[0][-1].legend(frameon=False, fontsize=7)
  fig.suptitle(title, y=1.0)
  fig.tight_layout()
  plotting.seed_note(fig, n, note)
  return fig


def styled(names: Sequence[str] = ("query", "key", "value", "out"),
           colors: dict = plotting.MATRIX_COLORS,
           labels: dict = plotting.MATRIX_LABELS) -> list[tuple]:
  """``draw_against``'s bands: ``(name, colour, label)`` for each of ``names``
  (by default the matrices W_Q, W_K, W_V, W_O)."""
  return [(n, colors[n], labels[n]) for n in names]


def against(title: str, name: str, spec: Callable[[results.Run], dict]) -> Figure:
  """Panels against a swept value: ``spec(run)`` gives ``draw_against``'s arguments."""
  return Figure(title, name, lambda r: draw_against(**spec(r)))


def rel_dist_init(sites: Callable[[results.Run], list[str]] = effects.layers,
                  names: Sequence[str] = plotting.QKV + ("out",)) -> Figure:
  """Per site, how far each matrix moved: ||W - W_init|| / ||W_init|| over training."""
  return site_curves("Relative distance from initialization", "rel_dist_init",
                     "rel_dist_init", names, "||W - W_init|| / ||W_init||",
                     "How far each matrix moved", sites=sites)


def eff_rank(sites: Callable[[results.Run], list[str]] = effects.layers) -> Figure:
  """Per site, the effective rank of W_Q, W_K, W_V over training."""
  return site_curves("Effective rank of W_Q, W_K, W_V", "eff_rank", "eff_rank", plotting.QKV,
                     "effective rank", "Effective rank (exp entropy of singular values)",
                     sites=sites)


def head_lines(key: str, n_heads: int, cmap: str = "viridis") -> list[Line]:
  """A band per head, ``key/H<h>`` (coloured along ``cmap``), and one of
  their mean, ``key/mean`` (black)."""
  colors = plotting.plt.get_cmap(cmap)
  return [Line(f"{key}/H{h}", colors(h / max(1, n_heads - 1)), f"head {h}")
          for h in range(n_heads)] + [Line(f"{key}/mean", "k", "head mean")]

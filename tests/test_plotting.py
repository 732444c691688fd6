"""Figure notes never sit on the axes' text."""

from matplotlib.text import Text

from qkvjax import plotting


def _boxes(fig, skip=frozenset()):
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  texts = {id(t): t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
           and id(t) not in skip}
  return [(t.get_text(), t.get_window_extent(renderer)) for t in texts.values()]


def _overlapping(fig):
  """What the seed note overlaps."""
  boxes = _boxes(fig)
  (note,) = [box for text, box in boxes if text.startswith("mean ± 1 std")]
  return [text for text, box in boxes if box is not note and box.overlaps(note)]


def test_seed_note_is_moved_clear_of_tick_and_axis_labels():
  # The per-site curves' layout (``plotting.per_site_matrices``: one short row).
  fig, axes = plotting.plt.subplots(1, 2, figsize=(6.4, 2.6))
  for ax in axes:
    ax.plot([0, 600, 1200], [0, 1, 2])
    ax.set_xlabel("step")
  fig.suptitle("a title", y=1.02)
  plotting.seed_note(fig, 8)
  assert _overlapping(fig), "the case this guards against: the note on the x label"
  height = fig.get_figheight()
  plotting.clear_notes(fig)
  assert not _overlapping(fig)
  assert fig.get_figheight() > height
  plotting.plt.close(fig)


def _pairs_overlapping(fig):
  """Every pair of drawn texts whose boxes intersect (tick labels outside the
  view limits are not drawn)."""
  fig.canvas.draw()
  hidden = {id(t) for ax in fig.axes for labels, lim, i in (
      (ax.get_xticklabels(), ax.get_xlim(), 0), (ax.get_yticklabels(), ax.get_ylim(), 1))
            for t in labels if not min(lim) <= t.get_position()[i] <= max(lim)}
  boxes = _boxes(fig, skip=hidden)
  return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
          if box_a.overlaps(box_b)]


def test_declared_panels_keep_their_text_apart():
  from qkvjax.figure_kinds import Line, Panel, Ref, draw_panels  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  x = np.array([0, 600, 1200])
  curve = lambda r: (x, np.array([[0.1, 0.5, 0.9], [0.2, 0.4, 0.8]]))
  lines = [Line(curve, "k", "a condition"), Line(curve, "r", "another", ls="--")]
  grid = [[Panel(lines, "a y label", "a title", refs=[Ref(0.5, "chance")], legend="best"),
           Panel(lines, title="beside it", refs=[Ref(0.0)], legend="right")],
          [Panel([Line(lambda r: (np.array([1, 2, 4]), curve(r)[1]), "b", "by depth")],
                 "log scale", xlabel="depth", log=True, xticks=[1, 2, 4], xlog2=True), None]]
  fig = draw_panels(None, grid, suptitle="a figure title", note="at initialization")
  plotting.clear_notes(fig)
  assert not _pairs_overlapping(fig)
  plotting.plt.close(fig)


def test_layer_head_heatmaps_keep_their_text_apart():
  import numpy as np  # pylint: disable=g-import-not-at-top
  grids = {f"score {i}": (np.linspace(-1, 1, 8).reshape(2, 4), -1, 1, "RdBu_r") for i in range(3)}
  fig = plotting.layer_head_heatmaps(grids, ["L0", "L1"], "per head", ncols=2, annotate=True,
                                     note="cells: mean over 4 seeds")
  plotting.clear_notes(fig)
  assert not _pairs_overlapping(fig)
  plotting.plt.close(fig)

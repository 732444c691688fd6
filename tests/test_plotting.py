"""Figure notes never sit on the axes' text."""

from matplotlib.text import Text

from qkvjax import plotting


def _boxes(fig):
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  texts = {id(t): t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()}
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

"""Results files: the umask's mode for every file, and a full disk that
leaves metrics.jsonl whole."""

import errno
import os
import stat

import numpy as np
import pytest

from qkvjax import results


def test_atomic_files_and_metrics_get_the_umask_mode(tmp_path):
  mask = os.umask(0)
  os.umask(mask)
  results.write_json(tmp_path / "a.json", {"x": 1})
  writer = results.MetricsWriter(tmp_path / "metrics.jsonl")
  writer.write(0, {"loss": np.array([1.0])})
  writer.close()
  for name in ("a.json", "metrics.jsonl"):
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


def test_a_full_disk_cuts_the_metrics_back_and_says_so_in_one_line(tmp_path, monkeypatch):
  path = tmp_path / "metrics.jsonl"
  writer = results.MetricsWriter(path)
  writer.write(0, {"loss": np.array([1.0, 2.0])}, {"condition": "a"})
  before = path.read_text()
  real_write = os.write

  def half_then_full(fd, data):
    real_write(fd, bytes(data[:len(data) // 2]))
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "write", half_then_full)
  with pytest.raises(results.RunError) as e:
    writer.write(1, {"loss": np.array([1.0, 2.0])}, {"condition": "a"})
  monkeypatch.undo()
  writer.close()
  assert path.read_text() == before  # no torn line
  assert "No space left on device" in str(e.value) and "\n" not in str(e.value)
  assert len(results.read_metrics(path)) == 2

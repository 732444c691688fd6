"""--tensorboard: event files that hold what metrics.jsonl holds; without
tensorboardX, one line and exit 2 before anything is written."""

import importlib.util
import json
import struct

import numpy as np
import pytest

from experiments import run as run_cli
from tests.test_cli import TINY

tensorboardX = pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2  # pylint: disable=wrong-import-position


def _scalars(event_dir) -> dict[str, dict[int, float]]:
  """tag -> {step: value}, read from the TFRecord event files."""
  out = {}
  for path in sorted(event_dir.rglob("events.out.tfevents.*")):
    data, i = path.read_bytes(), 0
    while i < len(data):
      (length,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
      i += 12 + length + 4  # length, its crc, the record, its crc
      for value in event.summary.value:
        out.setdefault(value.tag, {})[event.step] = value.simple_value
  return out


def test_tensorboard_events_hold_the_logged_means_and_seeds(tmp_path):
  assert run_cli.main(["run", f"--results_dir={tmp_path}", "--tensorboard",
                       "--figure_formats=none"] + TINY) == 0
  (run_dir,) = (tmp_path / "specialization").iterdir()
  scalars = _scalars(run_dir / "tensorboard")
  rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  steps = sorted({r["step"] for r in rows})
  assert sorted(scalars["default/loss"]) == steps == [0, 2, 4]
  for step in steps:
    at = [r for r in rows if r["step"] == step]
    np.testing.assert_allclose(scalars["default/loss"][step], np.mean([r["loss"] for r in at]),
                               rtol=1e-6)
    for r in at:
      np.testing.assert_allclose(scalars[f"default/seed{r['seed']}/loss"][step], r["loss"],
                                 rtol=1e-6)
  assert "default/grad_norm/L0/query" in scalars and "default/symmetry/L0" in scalars


def test_tensorboard_without_its_package_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "tensorboardX" else real(name, *a))
  assert run_cli.main(["run", f"--results_dir={tmp_path}", "--tensorboard"] + TINY) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "pip install -e '.[tensorboard]'" in err[0]
  assert not (tmp_path / "specialization").exists()

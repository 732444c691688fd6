"""Where logged metrics go. ``metrics.jsonl`` (``results.MetricsWriter``) is
the record every figure and claim is drawn from; a ``Sink`` is any extra
destination (TensorBoard here; W&B or others plug into the same protocol).
"""

from __future__ import annotations

import pathlib
from typing import Any, Protocol

import numpy as np

from qkvjax.errors import ConfigError

# Per-seed curves only for these (every metric gets its across-seed mean).
PER_SEED = ("loss", "accuracy")


class Sink(Protocol):
  """Receives each logging point of one condition: [seeds] arrays by name."""

  def write(self, step: int, metrics: dict[str, np.ndarray], fields: dict[str, Any]) -> None: ...

  def close(self) -> None: ...


class TensorBoardSink:
  """TensorBoard event files under ``<run_dir>/tensorboard`` (tensorboardX: a
  small writer that needs only numpy and protobuf, not TensorFlow or the
  TensorBoard server). Scalars are ``<condition>/<metric>`` (mean over
  seeds) and ``<condition>/seed<i>/loss``; watch with ``tensorboard --logdir``."""

  def __init__(self, run_dir: pathlib.Path):
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ConfigError("--tensorboard needs the tensorboardX package; install it with "
                        "`pip install -e '.[tensorboard]'`")
    self._writer = SummaryWriter(str(pathlib.Path(run_dir) / "tensorboard"))

  def write(self, step: int, metrics: dict[str, np.ndarray], fields: dict[str, Any]) -> None:
    prefix = "/".join(str(fields[k]) for k in ("condition", "phase") if k in fields
                      and fields[k] != "train")
    for key, values in metrics.items():
      values = np.asarray(values, float)
      finite = values[np.isfinite(values)]
      if finite.size:
        self._writer.add_scalar(f"{prefix}/{key}", float(finite.mean()), step)
      if key in PER_SEED:
        for seed, v in enumerate(values):
          if np.isfinite(v):
            self._writer.add_scalar(f"{prefix}/seed{seed}/{key}", float(v), step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def check_tensorboard() -> None:
  """ConfigError now, before anything is written, if the writer is missing."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec("tensorboardX") is None:
    raise ConfigError("--tensorboard needs the tensorboardX package; install it with "
                      "`pip install -e '.[tensorboard]'`")

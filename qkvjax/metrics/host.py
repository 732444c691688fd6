"""Metrics finished on the host, after the run axis is gathered."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import numpy as np


class HostMetric(NamedTuple):
  """``collect`` (inside the jitted, run-vmapped measurement) returns arrays
  per run; ``finish`` (numpy, on [runs, ...] arrays gathered from every
  device and process) turns them into [runs] metrics. For linear algebra that
  must not run inside a program sharded over several CPU devices."""

  collect: Callable[..., dict[str, jax.Array]]
  finish: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

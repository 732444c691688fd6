"""Shared fixtures: tiny configs so the whole suite runs in minutes on 2 cores."""

import os
import pathlib
import sys

# Tests compile many small programs; XLA's backend optimizations cost more
# compile time than they save at these sizes (init 4.9 s -> 1.3 s measured).
# The flag must be set before JAX starts its backend.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_backend_optimization_level=0").strip()
# In-process tests keep one CPU device (the command line's default is one per
# core); tests of several devices start their own processes.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "1")
# Tests compile from scratch and leave no cache behind.
os.environ["QKVJAX_CACHE_DIR"] = "off"

import pytest  # pylint: disable=wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from qkvjax import registry


def tiny_config(**overrides):
  """The specialization config shrunk to compile and run in seconds."""
  c = registry.load_config("specialization")
  c.num_seeds = 2
  c.steps = 6
  c.log_every = 3
  c.batch_size = 8
  c.task.n_categories = 4
  c.task.nouns_per_category = 3
  c.task.n_details = 4
  c.task.n_slots = 3
  c.model.d_model = 16
  c.model.n_heads = 2
  c.model.d_head = 8
  c.model.n_layers = 2
  c.model.d_mlp = 32
  for path, value in overrides.items():
    node = c
    *parents, leaf = path.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture
def tiny():
  return tiny_config

"""Several processes (hosts) training one run: start-up, who writes, gathering.

Launched the usual way on a cluster (SLURM, Cloud TPU, or environment set by
a launcher), ``initialize()`` with no arguments lets JAX detect the cluster;
on one machine, ``--coordinator_address``, ``--num_processes`` and
``--process_id`` start it by hand (CPU processes talk over gloo). Every
process computes its share of the run axis; only process 0 writes files, and
metrics are gathered from every process before it does.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

_CLUSTER_ENV = ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS",
                "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS")


def physical_cores() -> int:
  """Physical cores this process may use (hyper-threads counted once)."""
  allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      text = f.read()
    cores = {tuple(line.split(":")[1].strip() for line in block.splitlines()
                   if line.startswith(("physical id", "core id")))
             for block in text.split("\n\n") if "core id" in block}
    siblings = max(1, (os.cpu_count() or 1) // max(1, len(cores)))
    return max(1, min(len(cores) or allowed, allowed // siblings or 1))
  except OSError:
    return max(1, allowed or 1)


def configure_cpu_devices(count: int | None = None) -> int | None:
  """Gives the CPU backend one device per physical core (or ``count``, or
  ``$QKVJAX_CPU_DEVICES``), so the run axis is sharded over every core. Must
  run before JAX starts a backend; ``JAX_NUM_CPU_DEVICES`` set by the user
  wins. Returns the count set, or None where it was left alone."""
  if "JAX_NUM_CPU_DEVICES" in os.environ:
    return None
  count = count or int(os.environ.get("QKVJAX_CPU_DEVICES", 0)) or physical_cores()
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # a backend has started (e.g. called in-process by tests)
    return None
  return count


def launched_on_cluster() -> bool:
  """Whether a cluster launcher set up this process's environment."""
  return any(v in os.environ for v in _CLUSTER_ENV)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """``jax.distributed.initialize``, with gloo collectives on CPU. Call before
  anything touches a JAX device."""
  if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or not _has_accelerator():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


def _has_accelerator() -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top
  return any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin",
                                                   "libtpu", "jax_rocm60_plugin"))


def is_writer() -> bool:
  """Only process 0 writes results."""
  return jax.process_index() == 0


def gather(tree: Any) -> Any:
  """Every leaf as a host numpy array holding the whole run axis, from every
  process (a plain ``device_get`` with one process)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def broadcast_text(text: str) -> str:
  """Process 0's ``text`` on every process (e.g. the run directory it made)."""
  if jax.process_count() == 1:
    return text
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data = np.zeros(4096, np.uint8)
  raw = text.encode("utf-8")[:4096]
  data[:len(raw)] = np.frombuffer(raw, np.uint8)
  out = np.asarray(multihost_utils.broadcast_one_to_all(data))
  return bytes(out[out > 0]).decode("utf-8")

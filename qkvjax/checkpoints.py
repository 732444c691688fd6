"""Train-state checkpoints with Orbax: save, keep the last two, load back.

A program's state is saved per run directory: each run directory gets the
slice of the run axis that belongs to it (its conditions x seeds), as host
arrays, under ``checkpoints/<program key>/<step>/``. Orbax writes a
checkpoint into a temporary directory and renames it when complete, so a
killed save never leaves a checkpoint that loads wrong; the manager keeps the
last ``KEEP``. The leaves are stored flat, in the order of the state's tree;
the tree is rebuilt from the program (``restore(..., like=abstract_state)``).
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any, Sequence

import jax
import numpy as np

KEEP = 2


def program_key(conditions: Sequence[str]) -> str:
  """A stable directory name for the conditions a program trains in one run dir."""
  return "p" + hashlib.sha1("\n".join(conditions).encode()).hexdigest()[:12]


def _manager(path: pathlib.Path):
  """A manager of this process alone: the state is gathered to host arrays
  first, so no other process takes part in a save or restore (with several
  processes, only process 0 saves; every process restores)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  me = jax.process_index()
  path.mkdir(parents=True, exist_ok=True)
  return ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(
      max_to_keep=KEEP, create=False, enable_async_checkpointing=False,
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          primary_host=me, active_processes={me})))


def directory(run_dir, conditions: Sequence[str]) -> pathlib.Path:
  return pathlib.Path(run_dir) / "checkpoints" / program_key(conditions)


def save(run_dir, conditions: Sequence[str], step: int, state: Any) -> None:
  """Saves ``state`` (host arrays) at ``step``."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  leaves = jax.tree.leaves(state)
  flat = {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
  mngr = _manager(directory(run_dir, conditions))
  mngr.save(step, args=ocp.args.StandardSave(flat))
  mngr.wait_until_finished()
  mngr.close()


def steps(run_dir, conditions: Sequence[str]) -> list[int]:
  """The saved steps, oldest first ([] if none)."""
  path = directory(run_dir, conditions)
  if not path.is_dir():
    return []
  mngr = _manager(path)
  out = sorted(mngr.all_steps())
  mngr.close()
  return out


def restore(run_dir, conditions: Sequence[str], step: int, like: Any) -> Any:
  """The state saved at ``step``, shaped like ``like`` (a pytree of arrays or
  ShapeDtypeStructs with the same leading run-axis slice)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mngr = _manager(directory(run_dir, conditions))
  flat = mngr.restore(step, args=ocp.args.StandardRestore())
  mngr.close()
  leaves, treedef = jax.tree.flatten(like)
  got = [np.asarray(flat[f"{i:05d}"]) for i in range(len(leaves))]
  for want, have in zip(leaves, got):
    if tuple(want.shape) != have.shape:
      raise ValueError(f"checkpoint at step {step} in {run_dir} does not match the "
                       f"program: a leaf of shape {have.shape}, expected {want.shape}")
  return jax.tree.unflatten(treedef, got)

"""Train-state checkpoints with Orbax: save, keep the last two, load back.

A program's state is saved per run directory: each run directory gets the
slice of the run axis that belongs to it (its conditions x seeds), as host
arrays, under ``checkpoints/<program key>/<step>/``. Orbax writes a
checkpoint into a temporary directory and renames it when complete, so a
killed save never leaves a checkpoint that loads wrong; the manager keeps the
last ``KEEP``. The state is stored as a nested dict keyed by its own paths
(``params/layers/0/attn/query``, ``opt_state/inner_state/0/mu/...``,
``step``...; leaves ``[runs, ...]``), so Orbax alone opens a checkpoint with
the parameters' names; ``restore(..., like=abstract_state)`` reads it back
into the program's tree by those paths. Checkpoints of the earlier layout
(leaves stored flat, ``00000``...) still load, by position.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import sys
import threading
import time
from typing import Any, Sequence

import jax
import numpy as np

from qkvjax import interrupts

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
  """Absolute (Orbax refuses relative paths), whatever ``run_dir`` is."""
  return pathlib.Path(run_dir).absolute() / "checkpoints" / program_key(conditions)


class SaveError(RuntimeError):
  """A checkpoint could not be saved: one line, the partial save removed."""


def save(run_dir, conditions: Sequence[str], step: int, state: Any) -> None:
  """Saves ``state`` (host arrays) at ``step``. On any failure (a full disk)
  the partial temporary directory is removed and ``SaveError`` says why in
  one line; the checkpoints saved before stay as they were."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  named = as_named_dict(state)
  path = directory(run_dir, conditions)
  mngr = None
  quiet_threads = _QuietSave()
  quiet = _QuietOrbaxThreads()
  logging.getLogger("absl").addFilter(quiet)
  try:
    mngr = _manager(path)
    mngr.save(step, args=ocp.args.StandardSave(named))
    mngr.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    time.sleep(0.5)  # let the abandoned writes stop before their directory goes
    _remove_partial(path)
    raise SaveError(f"could not save the checkpoint of step {step} in {path} "
                    f"({_first_line(e)})") from None
  else:
    quiet_threads.restore()
  finally:
    if mngr is not None:
      try:
        mngr.close()
      except Exception:  # pylint: disable=broad-except
        pass
    logging.getLogger("absl").removeFilter(quiet)


class _MainThreadOnly:
  """A text stream that passes on the writes of the main thread and of the
  interrupt watcher (its note, when a signal comes during a save) only."""

  def __init__(self, stream):
    self.stream = stream

  def write(self, text: str) -> int:
    me = threading.current_thread()
    if me is threading.main_thread() or me.name == interrupts.WATCHER:
      return self.stream.write(text)
    return len(text)

  def __getattr__(self, name):
    return getattr(self.stream, name)


class _QuietSave:
  """Output of Orbax's and tensorstore's threads during a save: the C-level
  standard error goes to a temporary file and ``sys.stderr`` passes on the
  main thread's writes only. A successful save puts both back and passes on
  what the file caught. After a failed save those threads keep printing
  tracebacks (their event loop is closed) before and after the failure
  surfaces, which would bury the one-line error: the redirection stays for
  the rest of the process, the main thread's lines still reach the user."""

  def __init__(self):
    import tempfile  # pylint: disable=g-import-not-at-top
    self.active = False
    try:
      sys.stderr.flush()
      self.log = tempfile.TemporaryFile()
      self.saved_fd = os.dup(2)
      self.saved_stderr = sys.stderr
      self.terminal = os.fdopen(os.dup(self.saved_fd), "w", buffering=1)
      os.dup2(self.log.fileno(), 2)
      sys.stderr = _MainThreadOnly(self.terminal)
      self.active = True
    except (OSError, ValueError, AttributeError):
      pass

  def restore(self) -> None:
    """After a successful save."""
    if not self.active:
      return
    os.dup2(self.saved_fd, 2)
    os.close(self.saved_fd)
    sys.stderr = self.saved_stderr
    self.terminal.close()
    self.log.seek(0)
    caught = self.log.read().decode("utf-8", "replace")
    self.log.close()
    if caught:
      sys.stderr.write(caught)


class _QuietOrbaxThreads(logging.Filter):
  """Drops Orbax's worker-thread error logs during a save: a failed save is
  reported once, by ``SaveError``."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "raised an exception" not in record.getMessage()




def _first_line(e: BaseException) -> str:
  """A short reason: Orbax wraps OS errors in several layers of text."""
  text = str(e).strip() or type(e).__name__
  for marker in ("No space left on device", "Permission denied", "Read-only file system",
                 "Disk quota exceeded"):
    if marker in text:
      return marker
  return text.splitlines()[0][:200]


def _remove_partial(path: pathlib.Path) -> None:
  """Orbax's temporary directories of an unfinished save."""
  import shutil  # pylint: disable=g-import-not-at-top
  if path.is_dir():
    for tmp in path.glob("*.orbax-checkpoint-tmp*"):
      shutil.rmtree(tmp, ignore_errors=True)


def last_step_on_disk(run_dir) -> int | None:
  """The latest step any program of a run directory saved, from the
  directory names alone (no Orbax: cheap enough for a signal handler); None
  if none. Orbax's temporary directories do not count."""
  found = [int(p.name) for p in (pathlib.Path(run_dir) / "checkpoints").glob("*/*")
           if p.is_dir() and p.name.isdigit()]
  return max(found) if found else None


def steps(run_dir, conditions: Sequence[str]) -> list[int]:
  """The saved steps, oldest first ([] if none)."""
  path = directory(run_dir, conditions)
  if not path.is_dir():
    return []
  mngr = _manager(path)
  out = sorted(mngr.all_steps())
  mngr.close()
  return out


def _path_names(path) -> list[str]:
  """A tree path as names: attributes, dict keys and indices; an NNX
  Variable's own ``value`` attribute is left out."""
  names = []
  for k in path:
    name = getattr(k, "name", getattr(k, "key", getattr(k, "idx", None)))
    names.append(str(name))
  if len(names) > 1 and names[-1] == "value":
    names.pop()
  return names


def as_named_dict(state: Any) -> dict[str, Any]:
  """``state``'s leaves (as host arrays) in a nested dict keyed by their paths."""
  out: dict[str, Any] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    *parents, last = _path_names(path)
    node = out
    for name in parents:
      node = node.setdefault(name, {})
    if last in node:
      raise ValueError(f"two leaves of the state share the path {'/'.join(parents + [last])}")
    node[last] = np.asarray(leaf)
  return out


def _legacy(saved: dict) -> bool:
  """The earlier layout: leaves stored flat under 00000, 00001..."""
  return bool(saved) and all(len(k) == 5 and k.isdigit() for k in saved)


def restore(run_dir, conditions: Sequence[str], step: int, like: Any) -> Any:
  """The state saved at ``step``, shaped like ``like`` (a pytree of arrays or
  ShapeDtypeStructs with the same leading run-axis slice)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mngr = _manager(directory(run_dir, conditions))
  saved = mngr.restore(step, args=ocp.args.StandardRestore())
  mngr.close()
  with_paths, treedef = jax.tree_util.tree_flatten_with_path(like)
  if _legacy(saved):
    got = [np.asarray(saved[f"{i:05d}"]) if f"{i:05d}" in saved else None
           for i in range(len(with_paths))]
  else:
    got = []
    for path, _ in with_paths:
      node = saved
      for name in _path_names(path):
        node = node.get(name) if isinstance(node, dict) else None
      got.append(None if node is None else np.asarray(node))
  for (path, want), have in zip(with_paths, got):
    where = "/".join(_path_names(path))
    if have is None or tuple(want.shape) != have.shape:
      raise ValueError(f"checkpoint at step {step} in {run_dir} does not match the "
                       f"program: {where} is " + ("missing" if have is None else
                                                 f"of shape {have.shape}, expected "
                                                 f"{tuple(want.shape)}"))
  return jax.tree.unflatten(treedef, got)

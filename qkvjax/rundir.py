"""One run directory, and everything kept in it: ``RunDir``.

Its path is resolved once, in the constructor (absolute, ``~`` expanded), so
every file below it, checkpoints among them (Orbax refuses relative paths),
sees the same absolute path. A ``RunDir`` owns the run's status in
``config.json`` (running, complete, failed with a one-line error and
``traceback.txt``, interrupted), its ``metrics.jsonl`` (the writer, and the
rewrite a resume starts with), its checkpoints (save, restore, the steps
saved) and the note an interrupted run prints. A sweep directory is a
``RunDir`` too: its points are run directories below it, and its
``sweep.json`` takes each point's status from the point's ``config.json``.
With several processes only process 0 writes.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import sys
import traceback
from typing import Any, Sequence

from qkvjax import checkpoints
from qkvjax import distributed
from qkvjax import results


class RunDir(os.PathLike):
  """A run (or sweep) directory: ``run_dir / "name"`` is a file in it, and it
  passes wherever a path is accepted."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path).expanduser().absolute()

  @classmethod
  def create(cls, results_dir: str | os.PathLike, exp: str) -> RunDir:
    """A fresh ``results_dir/exp/<timestamp>[-n]``, never an existing one;
    made by the writing process, the same path on every process."""
    path = None
    if distributed.is_writer():
      parent = cls(results.check_writable(results_dir, exp)).path / exp
      parent.mkdir(parents=True, exist_ok=True)
      stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
      for n in range(1000):
        try:
          (parent / (stamp if n == 0 else f"{stamp}-{n}")).mkdir()
        except FileExistsError:
          continue
        path = parent / (stamp if n == 0 else f"{stamp}-{n}")
        break
      else:
        raise RuntimeError(f"could not create a fresh run directory under {parent}")
    return cls(distributed.broadcast_text(str(path)))

  def __fspath__(self) -> str:
    return str(self.path)

  def __str__(self) -> str:
    return str(self.path)

  def __repr__(self) -> str:
    return f"RunDir({str(self.path)!r})"

  def __truediv__(self, name: str) -> pathlib.Path:
    return self.path / name

  def __eq__(self, other) -> bool:
    return isinstance(other, RunDir) and other.path == self.path

  def __hash__(self) -> int:
    return hash(self.path)

  @property
  def name(self) -> str:
    return self.path.name

  def point(self, name: str, create: bool = False) -> RunDir:
    """A run directory inside this one (a sweep's point); ``create`` makes
    it (process 0), failing if it exists."""
    if create and distributed.is_writer():
      (self.path / name).mkdir()
    return RunDir(self.path / name)

  def has(self, name: str) -> bool:
    return (self.path / name).is_file()

  def read_json(self, name: str = "config.json") -> Any:
    return results.read_json(self.path / name)

  def write_json(self, name: str, obj: Any) -> None:
    """A JSON file of the run (process 0 only)."""
    if distributed.is_writer():
      results.write_json(self.path / name, obj)

  # ---- status, in config.json --------------------------------------------------------
  @property
  def status(self) -> str | None:
    """``config.json``'s status ("running" if it names none); None without one."""
    if not self.has("config.json"):
      return None
    return self.read_json().get("status", "running")

  def set_status(self, status: str, error: str | None = None) -> None:
    """``status`` (and, for a failed run, ``error``: the one-line reason) in config.json."""
    if distributed.is_writer():
      saved = {k: v for k, v in self.read_json().items() if k != "error"}
      results.write_json(self.path / "config.json",
                         {**saved, "status": status, **({"error": error} if error else {})})

  def sync_points(self, points: Sequence[RunDir]) -> None:
    """A sweep's ``sweep.json`` takes each point's status from its config.json
    (nothing for a plain run)."""
    if not (distributed.is_writer() and self.has("sweep.json")):
      return
    statuses = {p.name: p.status or "running" for p in points}
    manifest = self.read_json("sweep.json")
    for p in manifest["points"]:
      if p["name"] in statuses:
        p["status"] = statuses[p["name"]]
    results.write_json(self.path / "sweep.json", manifest)

  def resume_command(self) -> str:
    return f"python -m experiments.run --resume={self.path}"

  def interrupted(self, units: Sequence[RunDir], signal_name: str) -> None:
    """Marks every unfinished unit interrupted and says, on stderr, what is
    kept and how to resume (this directory is the run or the sweep)."""
    for u in units:
      if u.status not in (None, "complete"):
        u.set_status("interrupted")
    self.sync_points(units)
    saved = [s for s in (u.last_checkpoint() for u in units) if s is not None]
    kept = (f"and its last checkpoint (step {max(saved)})" if saved else
            "and no checkpoint yet, so a resume starts from step 0")
    print(f"\ninterrupted ({signal_name}): {self.path} keeps its config, every logging point "
          f"written {kept}; resume with: {self.resume_command()}", file=sys.stderr)

  def failed(self, units: Sequence[RunDir], error: BaseException,
             finishing: bool = False) -> results.RunError:
    """Marks every unfinished unit (or, ``finishing``, every unit) failed with
    a one-line reason; an unexpected error's traceback goes to this
    directory's ``traceback.txt``. Returns the error to raise."""
    if isinstance(error, (results.RunError, checkpoints.SaveError)):
      reason = str(error)
    else:
      text = str(error).strip().splitlines()
      reason = f"{type(error).__name__}: {text[0][:200] if text else ''}".rstrip(": ")
      if distributed.is_writer():
        results.write_atomic(self / "traceback.txt", "".join(
            traceback.format_exception(type(error), error, error.__traceback__)))
        reason += f" (traceback in {self / 'traceback.txt'})"
    for u in units:
      if u.status is not None and (finishing or u.status != "complete"):
        u.set_status("failed", reason)
    self.sync_points(units)
    kept = "" if isinstance(error, results.RunError) else " and keeps every logging point written"
    return results.RunError(f"{reason}; {self.path} is marked failed{kept}")

  # ---- metrics.jsonl ------------------------------------------------------------------
  def metrics_writer(self) -> results.MetricsWriter:
    return results.MetricsWriter(self / "metrics.jsonl")

  def metrics(self) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` ([] without one)."""
    return results.read_metrics(self / "metrics.jsonl") if self.has("metrics.jsonl") else []

  def drop_metrics_from(self, conditions: Sequence[str], step: int | None) -> None:
    """Removes the rows of ``conditions`` logged at or after ``step`` (all of
    them, init rows included, when ``step`` is None), and any torn line: a
    resume recomputes them."""
    path = self / "metrics.jsonl"
    if not distributed.is_writer() or not path.exists():
      return
    conds = set(conditions)
    keep = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if _keep_line(line, conds, step)]
    results.write_atomic(path, "".join(keep))

  # ---- checkpoints --------------------------------------------------------------------
  def checkpoint_steps(self, conditions: Sequence[str]) -> list[int]:
    """The steps saved for the program of ``conditions``, oldest first."""
    return checkpoints.steps(self.path, conditions)

  def last_checkpoint(self) -> int | None:
    """The latest step any program saved, from directory names alone."""
    return checkpoints.last_step_on_disk(self.path)

  def save_checkpoint(self, conditions: Sequence[str], step: int, state: Any) -> None:
    """Saves ``state`` (host arrays) at ``step`` unless it is saved already."""
    if distributed.is_writer() and step not in self.checkpoint_steps(conditions):
      checkpoints.save(self.path, conditions, step, state)

  def restore_checkpoint(self, conditions: Sequence[str], step: int, like: Any) -> Any:
    return checkpoints.restore(self.path, conditions, step, like)


def _keep_line(line: str, conds: set[str], step: int | None) -> bool:
  try:
    row = json.loads(line)
  except json.JSONDecodeError:
    return False  # a torn line
  if row.get("condition") not in conds:
    return True
  if step is None:
    return False
  return row.get("phase") == "init" or row["step"] < step

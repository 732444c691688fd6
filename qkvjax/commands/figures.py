"""``--exp=figures``: redraw a run's outputs from its saved files, no training.

The run's ``config.json`` names its experiment; the study framework's
``finish`` rebuilds the summary, figures and report from ``metrics.jsonl``
and the side files (a study without ``STUDY`` supplies its own ``finish``).
A sweep directory redraws every point and the sweep's combined report. An
interrupted run is drawn from what was logged and marked incomplete.
"""

from __future__ import annotations

import functools
import pathlib

from qkvjax import registry
from qkvjax import rundir
from qkvjax import study as study_lib
from qkvjax.config import ConfigError


def _finisher(exp):
  try:
    module = registry.experiment_module(exp)
  except ImportError:
    return None
  if hasattr(module, "STUDY"):
    return functools.partial(study_lib.finish, module.STUDY)
  return getattr(module, "finish", None)


def check(config, results_dir=None) -> rundir.RunDir:
  del results_dir
  run_dir = rundir.RunDir(config.run_dir or ".")
  if config.run_dir and run_dir.has("sweep.json"):
    try:
      for p in run_dir.read_json("sweep.json")["points"]:
        if run_dir.point(p["name"]).has("metrics.jsonl"):
          check(type(config)({"run_dir": str(run_dir / p["name"])}))
    except (ValueError, OSError, KeyError, TypeError) as e:
      raise ConfigError(f"--config.run_dir={config.run_dir!r} has an unreadable sweep.json "
                        f"({type(e).__name__}); accepted: a sweep directory") from None
    return run_dir
  missing = [f for f in ("config.json", "metrics.jsonl") if not run_dir.has(f)]
  if not config.run_dir or missing:
    raise ConfigError(f"--config.run_dir={config.run_dir!r} is not a run directory; "
                      "accepted: a results/<experiment>/<run_id> directory holding "
                      "config.json and metrics.jsonl")
  try:
    saved = run_dir.read_json()
    has_rows = bool(run_dir.metrics())
  except (ValueError, OSError) as e:
    raise ConfigError(f"--config.run_dir={config.run_dir!r} has an unreadable "
                      f"config.json or metrics.jsonl ({type(e).__name__}); accepted: a "
                      "finished or interrupted run directory") from None
  if not has_rows:
    raise ConfigError(f"--config.run_dir={config.run_dir!r} has no logged metrics yet; "
                      "accepted: a run that reached its first logging point")
  exp = saved.get("experiment") if isinstance(saved, dict) else None
  if not isinstance(exp, str) or _finisher(exp) is None:
    raise ConfigError(f"--config.run_dir={config.run_dir!r} holds experiment {exp!r}, "
                      "which cannot be redrawn; accepted: a run of an experiment whose "
                      "study defines finish()")
  return run_dir


def run(config, results_dir=None, progress: bool = True) -> pathlib.Path:
  """Redraws a run, or every point of a sweep and the sweep's own report."""
  del progress
  run_dir = check(config, results_dir)
  if run_dir.has("sweep.json"):
    from qkvjax import sweep  # pylint: disable=g-import-not-at-top
    for p in run_dir.read_json("sweep.json")["points"]:
      point = run_dir.point(p["name"])
      if point.metrics():
        _finisher(point.read_json()["experiment"])(point)
    sweep.finish(run_dir)
    return run_dir.path
  _finisher(run_dir.read_json()["experiment"])(run_dir)
  return run_dir.path

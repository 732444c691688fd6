"""``--exp=figures``: redraw a run's outputs from its saved files, no training."""

from __future__ import annotations

import pathlib

from qkvjax import results
from qkvjax import specialization
from qkvjax.config import ConfigError

# Experiments whose outputs can be redrawn, by the name in their config.json.
REDRAWERS = {"specialization": specialization.finish}


def check(config) -> pathlib.Path:
  run_dir = pathlib.Path(config.run_dir)
  missing = [f for f in ("config.json", "metrics.jsonl") if not (run_dir / f).is_file()]
  if not config.run_dir or missing:
    raise ConfigError(f"--config.run_dir={config.run_dir!r} is not a run directory; "
                      "accepted: a results/<experiment>/<run_id> directory holding "
                      "config.json and metrics.jsonl")
  exp = results.read_json(run_dir / "config.json").get("experiment")
  if exp not in REDRAWERS:
    raise ConfigError(f"--config.run_dir={config.run_dir!r} holds experiment {exp!r}; "
                      f"accepted: runs of {', '.join(REDRAWERS)}")
  return run_dir


def run(config, results_dir=None) -> pathlib.Path:
  del results_dir  # outputs go back into the run directory
  run_dir = check(config)
  REDRAWERS[results.read_json(run_dir / "config.json")["experiment"]](run_dir)
  return run_dir

"""Redraw a finished run's summary, figures and report from its saved files.

    python -m experiments.run --exp=figures --config.run_dir=results/specialization/<run_id>
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.run_dir = ""  # a run directory holding config.json and metrics.jsonl
  return c

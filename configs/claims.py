"""Every claim experiment with its default config, and one combined report.

    python -m experiments.run --exp=claims [--config.experiments=scaling,tied]
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # --exp names, run in this order with their default configs.
  c.experiments = ("specialization", "init_scale", "scaling", "tied", "heads", "context",
                   "residual", "translation", "induction")
  return c

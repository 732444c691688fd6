"""Does specialization grow as the initialization of W_Q, W_K, W_V shrinks
(lazy vs rich training)? The headline setup at several init scales, folded
into one vmapped program.

    python -m experiments.run --exp=init_scale [--config.FIELD=VALUE ...]
"""

import ml_collections

from configs import specialization


VARIANTS = specialization.VARIANTS  # get_config(arg) / --config=ARG


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = specialization.get_config(arg)  # "tiny": the headline's tiny variant
  # Variance scales of the W_Q, W_K, W_V initializer (lecun_normal: the
  # standard deviation is multiplied by the square root). Distinct, > 0.
  c.scales = (0.1, 0.3, 1.0, 3.0)
  return c

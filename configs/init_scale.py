"""Does specialization grow as the initialization of W_Q, W_K, W_V shrinks
(lazy vs rich training)? The headline setup at several init scales, folded
into one vmapped program.

    python -m experiments.run --exp=init_scale [--config.FIELD=VALUE ...]
"""

import ml_collections

from configs import specialization


def get_config() -> ml_collections.ConfigDict:
  c = specialization.get_config()
  # Variance scales of the W_Q, W_K, W_V initializer (lecun_normal: the
  # standard deviation is multiplied by the square root). Distinct, > 0.
  c.scales = (0.1, 0.3, 1.0, 3.0)
  return c

"""Does dividing by sqrt(d_k) keep softmax from saturating and gradients from
exploding? For each d_head: scaled (1/sqrt(d_k)), unscaled, and QK-norm
(LayerNorm on q and k, then 1/sqrt(d_k)). Measured at initialization over
``init_seeds`` seeds, then trained over a grid of learning rates, every
(learning rate, seed) pair of a variant in one vmapped program.

    python -m experiments.run --exp=scaling [--config.FIELD=VALUE ...]
"""

import ml_collections

from qkvjax.config import model_config, optim_config


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0             # base seed; seed i uses fold_in(seed, i) in every variant
  c.num_seeds = 4        # training seeds per learning rate
  c.init_seeds = 64      # seeds for the measurements at initialization
  c.steps = 300
  c.log_every = 25
  c.batch_size = 32
  c.d_heads = "8,32,128"                  # comma-separated head dimensions d_k
  c.variants = "scaled,unscaled,qk_norm"  # any of these, comma-separated
  # Comma-separated learning rates > 0. Each run multiplies the optimizer's
  # update at rate 1 by its own rate: exactly AdamW (or SGD) at that rate.
  c.learning_rates = "0.001,0.01,0.1"

  c.task = ml_collections.ConfigDict()
  c.task.n_categories = 6
  c.task.nouns_per_category = 8
  c.task.verbs_per_category = 2
  c.task.n_details = 8
  c.task.n_slots = 4

  # d_head, attn_scale and qk_norm are set per run by the study. lecun_normal
  # W_Q, W_K on LayerNormed inputs give q, k entries of unit variance.
  c.model = model_config(d_model=32, n_heads=1, d_head=8, n_layers=2, mlp=False, d_mlp=64)
  c.optim = optim_config()  # AdamW, no clipping (it would hide the instability measured)
  del c.optim.learning_rate  # the rates come from learning_rates
  return c

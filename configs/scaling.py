"""Does dividing by sqrt(d_k) keep softmax from saturating and gradients from
exploding? For each d_head: scaled (1/sqrt(d_k)), unscaled, and QK-norm
(LayerNorm on q and k, then 1/sqrt(d_k)). Measured at initialization over
``init_seeds`` seeds, then trained over a grid of learning rates; the
conditions of one d_head that differ only in learning rate or attention scale
run as one vmapped program.

    python -m experiments.run --exp=scaling [--config.FIELD=VALUE ...]
"""

import ml_collections

from qkvjax.config import model_config, optim_config


VARIANTS = ("tiny",)  # get_config(arg) / --config=ARG


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0             # base seed; seed i uses fold_in(seed, i) in every condition
  c.num_seeds = 4        # training seeds per learning rate
  c.init_seeds = 64      # seeds for the measurements at initialization
  c.steps = 300
  c.log_every = 25
  c.batch_size = 32
  c.checkpoint_every = 10  # logging points between train-state checkpoints (and the last)
  c.d_heads = (8, 32, 128)                      # head dimensions d_k (two or more)
  c.variants = ("scaled", "unscaled", "qk_norm")  # any of these
  c.learning_rates = (0.001, 0.01, 0.1)         # each a condition, folded into one program

  c.task = ml_collections.ConfigDict()
  c.task.n_categories = 6
  c.task.nouns_per_category = 8
  c.task.verbs_per_category = 2
  c.task.n_details = 8
  c.task.n_slots = 4

  # d_head, attn_scale and qk_norm are set per condition by the study.
  # lecun_normal W_Q, W_K on LayerNormed inputs give q, k entries of unit variance.
  c.model = model_config(d_model=32, n_heads=1, d_head=8, n_layers=2, mlp=False, d_mlp=64)
  # AdamW, no clipping (it would hide the instability measured); the learning
  # rate is set per condition from learning_rates.
  c.optim = optim_config()

  if arg == "tiny":  # seconds on a CPU: tests and a first look (--config=tiny)
    c.num_seeds, c.init_seeds, c.steps, c.log_every, c.batch_size = 2, 5, 2, 1, 4
    c.checkpoint_every = 1
    c.d_heads, c.learning_rates = (4, 8), (0.01, 0.1)
    c.task.n_categories, c.task.nouns_per_category = 3, 2
    c.task.n_details, c.task.n_slots = 3, 2
    c.model.update(d_model=8, n_layers=1)
  elif arg is not None:
    raise ValueError(f"get_config({arg!r}): accepted: None, {', '.join(VARIANTS)}")
  return c

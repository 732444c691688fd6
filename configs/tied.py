"""`tied`: must Q, K and V come from three independent matrices?

Separate W_Q, W_K, W_V against W_K = W_Q, W_Q = W_K = W_V and no value
projection, on the selection task (verb -> noun, an asymmetric relation) and
on the match task (noun -> noun of the same category, a symmetric one).

    python -m experiments.run --exp=tied [--config.FIELD=VALUE ...]
"""

import ml_collections

from qkvjax.config import model_config, optim_config


VARIANTS = ("tiny",)  # get_config(arg) / --config=ARG


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0            # base seed; seed i of the run uses fold_in(seed, i)
  c.num_seeds = 8       # trained together, vmapped, in one program per condition
  c.steps = 800
  c.log_every = 25      # steps between logging points (metrics at step 0 too)
  c.batch_size = 64
  c.checkpoint_every = 10  # logging points between train-state checkpoints (and the last)

  # Conditions: none (separate W_Q, W_K, W_V), qk (W_K = W_Q), qkv
  # (W_Q = W_K = W_V), no_value (V = the layer input; needs
  # n_heads * d_head == d_model). Tasks: selection (asymmetric), match
  # (symmetric). Every (task, condition) pair is one condition of the run.
  c.conditions = ("none", "qk", "qkv", "no_value")
  c.tasks = ("selection", "match")
  c.threshold = 0.9          # accuracy on the eval batch that counts as "reached"
  c.eval_batch_size = 256    # one fixed batch, drawn from its own key
  # Smallest costs of interest: a tied condition's cost whose 95% CI lies above
  # 0 but wholly below its margin is "negligible".
  c.acc_margin = 0.02        # final accuracy lost
  c.speed_margin = 0.25      # log2 of the steps-to-threshold ratio (x1.19 slower)

  c.task = ml_collections.ConfigDict()
  c.task.n_categories = 6
  c.task.nouns_per_category = 8   # the match task needs >= 2
  c.task.verbs_per_category = 2
  c.task.n_details = 8
  c.task.n_slots = 4

  # One layer: what attention does at the prediction position is directly
  # visible. n_heads * d_head == d_model, as no_value needs.
  c.model = model_config(d_model=32, n_heads=2, d_head=16, n_layers=1, d_mlp=64)
  c.optim = optim_config(learning_rate=3e-3)

  if arg == "tiny":  # seconds on a CPU: tests and a first look (--config=tiny)
    c.num_seeds, c.steps, c.log_every, c.batch_size, c.checkpoint_every = 2, 4, 2, 8, 1
    c.eval_batch_size = 16
    c.task.n_categories, c.task.nouns_per_category = 3, 3
    c.task.n_details, c.task.n_slots = 3, 3
    c.model.update(d_model=16, n_heads=2, d_head=8, d_mlp=16)
  elif arg is not None:
    raise ValueError(f"get_config({arg!r}): accepted: None, {', '.join(VARIANTS)}")
  return c

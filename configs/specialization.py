"""Headline experiment: how W_Q, W_K and W_V specialize on the selection task.

    python -m experiments.run --exp=specialization [--config.FIELD=VALUE ...]
"""

import ml_collections

from qkvjax.config import model_config, optim_config


VARIANTS = ("tiny",)  # get_config(arg) / --config=ARG


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0            # base seed; seed i of the run uses fold_in(seed, i)
  c.num_seeds = 8       # trained together, vmapped, in one compiled program
  c.steps = 1200
  c.log_every = 40      # steps between logging points (metrics at step 0 too)
  c.batch_size = 64
  c.checkpoint_every = 10  # logging points between train-state checkpoints (and the last)

  c.task = ml_collections.ConfigDict()
  c.task.n_categories = 6   # edible, vehicle, movable, animate, wearable, readable
  c.task.nouns_per_category = 8
  c.task.verbs_per_category = 2
  c.task.n_details = 8      # colours
  c.task.n_slots = 4        # nouns per sequence, then the verb

  c.model = model_config()  # 2 layers x 4 heads, d_model 64 (qkvjax/config.py)
  c.optim = optim_config()  # AdamW, lr 1e-3

  if arg == "tiny":  # seconds on a CPU: tests and a first look (--config=tiny)
    c.num_seeds, c.steps, c.log_every, c.batch_size, c.checkpoint_every = 2, 4, 2, 8, 1
    c.task.n_categories, c.task.nouns_per_category = 3, 3
    c.task.n_details, c.task.n_slots = 3, 3
    c.model.update(d_model=16, n_heads=2, d_head=8, d_mlp=16)
  elif arg is not None:
    raise ValueError(f"get_config({arg!r}): accepted: None, {', '.join(VARIANTS)}")
  return c


def get_sweep() -> dict[str, tuple]:
  """The default grid of ``--sweep``: the headline claims across learning rates."""
  return {"optim.learning_rate": (3e-4, 1e-3, 3e-3)}

"""`heads`: do the heads of multi-head attention specialize to different relations?

A task needing two relations at once (the verb's selected noun and the token
just before the verb), learned with 1, 2, 4 and 8 heads; per head, its
attention on each relation's target and the loss increase when it alone is
ablated.

    python -m experiments.run --exp=heads [--config.FIELD=VALUE ...]
"""

import ml_collections

from qkvjax.config import model_config, optim_config


VARIANTS = ("tiny",)  # get_config(arg) / --config=ARG


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0            # base seed; seed i of the run uses fold_in(seed, i)
  c.num_seeds = 16      # trained together, vmapped, in one program per head count
  c.steps = 600
  c.log_every = 50      # steps between logging points (metrics at step 0 too)
  c.batch_size = 64
  c.checkpoint_every = 10  # logging points between train-state checkpoints (and the last)

  c.n_heads_list = (1, 2, 4, 8)  # head counts, one condition (program) each
  # "total": n_heads * d_head fixed at model.d_model (d_head = d_model / n_heads);
  # "per_head": d_head fixed at model.d_head (attention width grows with n_heads).
  c.head_budget = "total"
  c.eval_batch_size = 256      # one fixed batch, drawn from its own key
  c.separation_threshold = 0.5  # separation index above which heads count as divided

  c.task = ml_collections.ConfigDict()
  c.task.n_categories = 6
  c.task.nouns_per_category = 8
  c.task.verbs_per_category = 2
  c.task.n_details = 8         # colours: the answer of the selectional relation
  c.task.n_slots = 4
  c.task.n_adverbs = 8         # the token before the verb
  c.task.n_manners = 4         # the answer of the previous-token relation

  # One layer, so every head sees the raw tokens and both relations must be
  # found by attention in that layer. n_heads is set per condition (leave it
  # at 1); d_head is used only with head_budget="per_head".
  c.model = model_config(d_model=32, n_heads=1, d_head=8, n_layers=1, d_mlp=64)
  c.optim = optim_config(learning_rate=3e-3)

  if arg == "tiny":  # seconds on a CPU: tests and a first look (--config=tiny)
    c.num_seeds, c.steps, c.log_every, c.batch_size, c.checkpoint_every = 2, 4, 2, 8, 1
    c.eval_batch_size = 16
    c.task.n_categories, c.task.nouns_per_category, c.task.n_details = 3, 3, 3
    c.task.n_slots, c.task.n_adverbs, c.task.n_manners = 3, 3, 2
    c.n_heads_list = (1, 2)
    c.model.update(d_model=16, d_mlp=16)
  elif arg is not None:
    raise ValueError(f"get_config({arg!r}): accepted: None, {', '.join(VARIANTS)}")
  return c

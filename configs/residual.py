"""Residual connections and depth: does a token stay continuous with its
embedding, do tokens collapse to one vector without skips, and do the
gradients of W_Q and W_K vanish relative to W_V as tokens align (Noci et al.
2022)? Measured at initialization across seeds for each depth and three
conditions: skips (x + f(x)), no skips (f(x)), and skips scaled by
1/sqrt(depth) (x + f(x)/sqrt(depth)).

    python -m experiments.run --exp=residual [--config.FIELD=VALUE ...]
"""

import ml_collections

from qkvjax.config import model_config, optim_config


VARIANTS = ("tiny",)  # get_config(arg) / --config=ARG


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0            # base seed; seed i uses fold_in(seed, i), shared by all conditions
  c.num_seeds = 32      # measured together, vmapped
  c.steps = 0           # at initialization only: no training (accepted: 0)
  c.log_every = 1
  c.batch_size = 32
  c.depths = (1, 2, 4, 8, 16)   # numbers of blocks, each in 1..64
  c.conditions = ("residual", "no_residual", "scaled_residual")  # any of these

  c.task = ml_collections.ConfigDict()
  c.task.n_categories = 8
  c.task.nouns_per_category = 8
  c.task.verbs_per_category = 2
  c.task.n_details = 8
  c.task.n_slots = 8        # 8 nouns then the verb: 9 tokens per sequence

  # n_layers, residual and residual_scale are set per condition by the study.
  # Attention-only, bidirectional blocks, as in the rank-collapse analyses
  # (Dong et al. 2021, Noci et al. 2022).
  c.model = model_config(mlp=False, causal=False)
  c.optim = optim_config()  # unused at initialization; the Trainer is built as for any run

  if arg == "tiny":  # seconds on a CPU: tests and a first look (--config=tiny)
    c.num_seeds, c.batch_size, c.depths = 2, 4, (1, 2)
    c.task.n_categories, c.task.nouns_per_category = 4, 2
    c.task.n_details, c.task.n_slots = 3, 3
    c.model.update(d_model=16, n_heads=2, d_head=8)
  elif arg is not None:
    raise ValueError(f"get_config({arg!r}): accepted: None, {', '.join(VARIANTS)}")
  return c

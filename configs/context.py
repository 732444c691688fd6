"""Are Q, K, V recomputed per context? An ambiguous word ("apple": fruit or
company) whose sense is set by the words around it.

    python -m experiments.run --exp=context [--config.FIELD=VALUE ...]
"""

import ml_collections

from qkvjax.config import model_config, optim_config


VARIANTS = ("tiny",)  # get_config(arg) / --config=ARG


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0            # base seed; seed i of the run uses fold_in(seed, i)
  c.num_seeds = 8       # trained together, vmapped, in one compiled program
  c.steps = 600
  c.log_every = 30      # steps between logging points (metrics at step 0 too)
  c.batch_size = 64
  c.checkpoint_every = 10  # logging points between train-state checkpoints (and the last)

  c.task = ml_collections.ConfigDict()
  c.task.n_ambiguous = 4      # apple, jaguar, python, amazon (two senses each)
  c.task.n_cues = 8           # cue words per domain (nature: eat, ripe, ...; tech: stock, ceo, ...)
  c.task.n_neutral = 8        # words that say nothing about the sense
  c.task.seq_len = 8
  c.task.min_pos = 2          # the ambiguous word sits at positions min_pos..seq_len-1
  c.task.cue_prob = 0.25      # chance a context position holds a cue (>= 1 precedes the word)

  c.probe = ml_collections.ConfigDict()
  c.probe.replicates = 8      # contexts per (word, position, sense); half fit, half held out
  c.probe.ridge = 0.01        # ridge penalty per fitted row, on standardized features
  c.probe.spread_margin = 0.01  # "differ between contexts": relative spread above this
  c.probe.acc_margin = 0.05     # "sense recoverable": held-out accuracy above 0.5 + this

  c.model = model_config(n_layers=3)  # layer 1 against later layers: needs >= 2
  c.optim = optim_config()            # AdamW, lr 1e-3

  if arg == "tiny":  # seconds on a CPU: tests and a first look (--config=tiny)
    c.num_seeds, c.steps, c.log_every, c.batch_size, c.checkpoint_every = 2, 4, 2, 8, 1
    c.task.n_ambiguous, c.task.n_cues, c.task.n_neutral = 2, 3, 3
    c.task.seq_len, c.task.min_pos = 5, 3
    c.probe.replicates = 4
    c.model.update(d_model=16, n_heads=2, d_head=8, d_mlp=16, n_layers=2)
  elif arg is not None:
    raise ValueError(f"get_config({arg!r}): accepted: None, {', '.join(VARIANTS)}")
  return c

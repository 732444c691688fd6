"""Bidirectional (masked-token) vs causal (next-token) training of the same
model on the same real text: does W_Q W_K^T become symmetric under the first
and directional under the second (Saponati et al. 2025)?

    python -m experiments.run --exp=symmetry [--config.FIELD=VALUE ...]
"""

import ml_collections

from qkvjax.config import model_config, optim_config


VARIANTS = ("tiny",)  # get_config(arg) / --config=ARG


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 8       # per objective, vmapped; seed i starts from the same weights in both
  c.steps = 2000        # about 40 passes over the 52k-token text
  c.log_every = 100
  c.batch_size = 32
  c.checkpoint_every = 5

  c.task = ml_collections.ConfigDict()
  c.task.vocab_size = 512      # most frequent tokens of the text, plus <unk> and <mask>
  c.task.seq_len = 32
  c.task.mask_rate = 0.15      # masked objective: share of positions predicted

  c.model = model_config()     # 2 layers x 4 heads, d_model 64; causal set per condition
  # AdamW with the weight decay of Saponati et al.'s trained encoders (0.01);
  # a learning rate that lets the masked objective learn within the budget.
  c.optim = optim_config(learning_rate=3e-3, weight_decay=0.01, warmup_steps=100)

  if arg == "tiny":  # seconds on a CPU: tests and a first look (--config=tiny)
    c.num_seeds, c.steps, c.log_every, c.batch_size, c.checkpoint_every = 2, 4, 2, 4, 1
    c.task.vocab_size, c.task.seq_len = 64, 8
    c.model.update(d_model=16, n_heads=2, d_head=8, d_mlp=16)
  elif arg is not None:
    raise ValueError(f"get_config({arg!r}): accepted: None, {', '.join(VARIANTS)}")
  return c

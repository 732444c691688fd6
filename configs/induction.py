"""Induction heads in a 2-layer attention-only transformer on Bietti et al.'s
trigger-bigram sequences (the documentation prose's characters), against a
1-layer model and a model with W_K = W_Q (Elhage et al. 2021; Olsson et al.
2022; Bietti et al. 2023).

    python -m experiments.run --exp=induction [--config.FIELD=VALUE ...]

``get_config("tiny")`` shrinks it to seconds (tests); ``get_config("paper")``
has Bietti et al.'s sizes, for an accelerator.
"""

import ml_collections

from qkvjax.config import model_config, optim_config


VARIANTS = ("tiny", "paper")  # get_config(arg)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 8         # per condition, vmapped
  c.steps = 1000          # the drop came within 200 steps in a 3,000-step run
  c.log_every = 10        # fine enough to resolve it
  c.batch_size = 32
  c.checkpoint_every = 20
  c.eval_batch = 64       # fixed sequences: losses per position kind, ICL score
  c.probe_batch = 16      # repeated random sequences: attention scores
  c.composition = True    # Q/K/V-composition scores (needs 2 layers or more)
  c.drop_window = 4       # logging points over which the steepest drop is measured
  c.skip_steps = 0        # logging points before this step are left out of the drop

  c.task = ml_collections.ConfigDict()
  c.task.lowercase = True
  c.task.vocab_size = 0   # every (lowercased) character of the prose: 76
  c.task.seq_len = 64
  c.task.n_triggers = 3
  c.task.fixed_triggers = True  # the 3 most frequent characters; False: drawn per sequence
  c.task.outputs = "unigram"    # or "uniform" (mostly rare characters: a shortcut, see README)
  c.task.probe_len = 24

  # Bietti et al.'s model: attention only, random frozen token and position
  # embeddings and unembedding, one head per layer (pre-LayerNorm here; they
  # have none).
  c.model = model_config(d_model=64, n_heads=1, d_head=64, n_layers=2, mlp=False)
  c.model.frozen_embeddings = True
  c.model.positions = "random"  # frozen N(0, 1) positions (our reading of Bietti et al.)
  c.optim = optim_config(learning_rate=3e-3)

  if arg == "tiny":  # seconds on a CPU: tests
    c.num_seeds, c.steps, c.log_every, c.batch_size = 2, 8, 2, 4
    c.eval_batch, c.probe_batch, c.drop_window = 4, 2, 2
    c.task.vocab_size, c.task.seq_len, c.task.probe_len = 12, 16, 6
    c.model.d_model, c.model.d_head = 16, 16
  elif arg == "paper":
    # Bietti et al.'s sizes: sequences of 256, d_model 256, batch 512.
    c.steps, c.log_every, c.batch_size = 5000, 25, 512
    c.eval_batch, c.probe_batch = 256, 64
    c.task.lowercase, c.task.seq_len, c.task.probe_len = False, 256, 64
    c.model.d_model, c.model.d_head = 256, 256
  elif arg is not None:
    raise ValueError(f"get_config({arg!r}): accepted: None, {', '.join(VARIANTS)}")
  return c

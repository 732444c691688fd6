"""Headline experiment: how W_Q, W_K and W_V specialize on the selection task.

    python -m experiments.run --exp=specialization [--config.FIELD=VALUE ...]
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0            # base seed; seed i of the run uses fold_in(seed, i)
  c.num_seeds = 8       # trained together, vmapped, in one compiled program
  c.steps = 1200
  c.log_every = 40      # steps between logging points (metrics at step 0 too)
  c.batch_size = 64

  c.task = ml_collections.ConfigDict()
  c.task.n_categories = 6        # edible, vehicle, movable, animate, wearable, readable
  c.task.nouns_per_category = 8
  c.task.verbs_per_category = 2
  c.task.n_details = 8           # colours
  c.task.n_slots = 4             # nouns per sequence, then the verb

  c.model = ml_collections.ConfigDict()
  c.model.d_model = 64
  c.model.n_heads = 4
  c.model.d_head = 16
  c.model.n_layers = 2
  c.model.mlp = True
  c.model.d_mlp = 128
  c.model.causal = True           # False: bidirectional (encoder)
  c.model.residual = True
  c.model.residual_scale = 1.0    # x + residual_scale * branch
  c.model.tie = "none"            # "qk": W_K = W_Q; "qkv": W_Q = W_K = W_V
  c.model.value_proj = True       # False: V is the layer input (needs H*D = d_model)
  c.model.qk_norm = False         # LayerNorm on q and k (QK-norm)
  c.model.qkv_init = "lecun_normal"  # same initializer for W_Q, W_K, W_V
  c.model.qkv_init_scale = 1.0
  c.model.attn_scale = "inv_sqrt_dk"  # or "none", or a number

  c.optim = ml_collections.ConfigDict()
  c.optim.optimizer = "adamw"     # or "sgd"
  c.optim.learning_rate = 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.0
  c.optim.momentum = 0.9          # sgd only
  c.optim.warmup_steps = 0
  c.optim.grad_clip = 0.0         # 0 = off
  return c

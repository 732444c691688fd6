"""A small pre-LayerNorm transformer (decoder, or encoder with ``causal=False``).

Token and position embeddings, ``n_layers`` blocks of attention (the shared
``MultiHeadAttention``) and an optional MLP, each on a residual stream, a
final LayerNorm and an unembedding. Parameter paths read as
``layers/0/attn/query``; metrics shorten them to ``L0/query``
(``capture.site_name``).

Two options for circuit studies (Bietti et al. 2023), off when the ``model``
block lacks them, so the default model and program are unchanged:
``frozen_embeddings`` keeps the random token embedding and unembedding as
``Frozen`` variables (not ``nnx.Param``: the optimizer never sees them), and
``positions="sinusoidal"`` or ``"random"`` uses fixed sinusoidal or frozen
random Gaussian positions (Bietti et al.'s) instead of learned ones. These
options draw the same random keys as the default, so every other weight
is the default model's for the same seed.

Letters in names: B batch, T positions, M d_model, F MLP width, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from qkvjax import attention
from qkvjax.models.attention_block import MultiHeadAttention
from qkvjax.models.hyper import hyper, record, value_of


class Frozen(nnx.Variable):
  """A weight the model uses but training never updates (not an ``nnx.Param``)."""


def option(cfg, name: str, default):
  """``cfg.name`` where the model block has the field, else ``default``."""
  return cfg[name] if name in cfg else default


def sinusoidal_positions(seq_len: int, d_model: int) -> jax.Array:
  """Vaswani et al.'s fixed positions [T, M]: sin and cos of t / 10000^(2i/M)."""
  t_T1 = jnp.arange(seq_len, dtype=jnp.float32)[:, None]
  freq_H = jnp.exp(-jnp.log(10000.0) * jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model)
  angle_TxH = t_T1 * freq_H
  out_TxM = jnp.zeros((seq_len, d_model), jnp.float32)
  out_TxM = out_TxM.at[:, 0::2].set(jnp.sin(angle_TxH))
  return out_TxM.at[:, 1::2].set(jnp.cos(angle_TxH[:, :d_model // 2]))


class Block(nnx.Module):
  """x + s * attn(LN(x)), then x + s * mlp(LN(x)); without a residual stream
  (``residual=False``) each sublayer's output replaces x."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    m = cfg.d_model
    self.ln_attn = nnx.LayerNorm(m, epsilon=1e-5, rngs=rngs)
    self.attn = MultiHeadAttention(
        m, cfg.n_heads, cfg.d_head, rngs=rngs, tie=cfg.tie, value_proj=cfg.value_proj,
        qk_norm=cfg.qk_norm, attn_scale=attention.resolve_scale(cfg.attn_scale, cfg.d_head), qkv_init=cfg.qkv_init,
        qkv_init_scale=cfg.qkv_init_scale)
    self.mlp = cfg.mlp
    if cfg.mlp:
      self.ln_mlp = nnx.LayerNorm(m, epsilon=1e-5, rngs=rngs)
      self.mlp_in = nnx.Linear(m, cfg.d_mlp, rngs=rngs)
      self.mlp_out = nnx.Linear(cfg.d_mlp, m, rngs=rngs)
    self.residual = cfg.residual
    self.residual_scale = hyper(cfg.residual_scale)

  def _add(self, x_BxTxM, branch_BxTxM):
    if not self.residual:
      return branch_BxTxM
    return x_BxTxM + value_of(self.residual_scale) * branch_BxTxM

  def __call__(self, x_BxTxM: jax.Array, mask=None, *, attn_scale=None) -> jax.Array:
    record(self, "resid_in", x_BxTxM)
    x_BxTxM = self._add(x_BxTxM, self.attn(self.ln_attn(x_BxTxM), mask=mask,
                                           scale=attn_scale))
    if self.mlp:
      h_BxTxF = jax.nn.gelu(self.mlp_in(self.ln_mlp(x_BxTxM)))
      x_BxTxM = self._add(x_BxTxM, self.mlp_out(h_BxTxF))
    return x_BxTxM


POSITIONS = ("learned", "sinusoidal", "random")


class Transformer(nnx.Module):
  """``Transformer(cfg, vocab_size, seq_len, rngs=...)``; ``cfg`` is the
  ``model`` block of a config (``qkvjax.config.model_config``)."""

  def __init__(self, cfg, vocab_size: int, seq_len: int, *, rngs: nnx.Rngs):
    m = cfg.d_model
    self.embed = nnx.Embed(vocab_size, m, embedding_init=jax.nn.initializers.normal(1.0),
                           rngs=rngs)
    self.pos_embed = nnx.Param(jax.random.normal(rngs.params(), (seq_len, m)) * 0.1)
    self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
    self.ln_final = nnx.LayerNorm(m, epsilon=1e-5, rngs=rngs)
    self.unembed = nnx.Linear(m, vocab_size, use_bias=False, rngs=rngs)
    self.causal = cfg.causal
    positions = option(cfg, "positions", "learned")
    if positions not in POSITIONS:
      raise ValueError(f"positions={positions!r}: expected one of {POSITIONS}")
    if positions == "sinusoidal":
      self.pos_embed = Frozen(sinusoidal_positions(seq_len, m))
    elif positions == "random":  # frozen N(0, 1), the token embedding's scale
      self.pos_embed = Frozen(self.pos_embed[...] / 0.1)
    if option(cfg, "frozen_embeddings", False):
      self.embed.embedding = Frozen(self.embed.embedding[...])
      self.unembed.kernel = Frozen(self.unembed.kernel[...])

  @property
  def embedding_matrix(self) -> jax.Array:
    """W_E [V, M]."""
    return self.embed.embedding[...]

  @property
  def unembedding_matrix(self) -> jax.Array:
    """W_U [M, V]."""
    return self.unembed.kernel[...]

  @property
  def position_matrix(self) -> jax.Array:
    """The position embeddings [T, M] (learned or fixed)."""
    return self.pos_embed[...]

  def __call__(self, tokens_BxT: jax.Array, *, attn_scale=None) -> jax.Array:
    """Next-token logits [B, T, V]. ``attn_scale`` overrides every block's
    score scale (0: uniform attention)."""
    t = tokens_BxT.shape[1]
    tok_BxTxM = self.embed(tokens_BxT)
    record(self, "token_embed", tok_BxTxM)
    x_BxTxM = tok_BxTxM + self.pos_embed[:t]
    mask_TxT = attention.causal_mask(t) if self.causal else None
    for block in self.layers:
      x_BxTxM = block(x_BxTxM, mask_TxT, attn_scale=attn_scale)
    record(self, "final_resid", x_BxTxM)
    return self.unembed(self.ln_final(x_BxTxM))

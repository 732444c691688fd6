"""A small pre-LayerNorm transformer (decoder, or encoder with ``causal=False``).

Token and position embeddings, ``n_layers`` blocks of attention (the shared
``MultiHeadAttention``) and an optional MLP, each on a residual stream, a
final LayerNorm and an unembedding. Parameter paths read as
``layers/0/attn/query``; metrics shorten them to ``L0/query``
(``capture.site_name``).

Letters in names: B batch, T positions, M d_model, F MLP width, V vocabulary.
"""

from __future__ import annotations

import jax
from flax import nnx

from qkvjax import attention
from qkvjax.models.attention_block import MultiHeadAttention, resolve_scale
from qkvjax.models.hyper import hyper, record, value_of


class Block(nnx.Module):
  """x + s * attn(LN(x)), then x + s * mlp(LN(x)); without a residual stream
  (``residual=False``) each sublayer's output replaces x."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    m = cfg.d_model
    self.ln_attn = nnx.LayerNorm(m, epsilon=1e-5, rngs=rngs)
    self.attn = MultiHeadAttention(
        m, cfg.n_heads, cfg.d_head, rngs=rngs, tie=cfg.tie, value_proj=cfg.value_proj,
        qk_norm=cfg.qk_norm, attn_scale=_scale(cfg), qkv_init=cfg.qkv_init,
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


def _scale(cfg):
  """``cfg.attn_scale`` as a number (a traced per-run value passes through)."""
  if isinstance(cfg.attn_scale, jax.Array):
    return cfg.attn_scale
  return resolve_scale(cfg.attn_scale, cfg.d_head)


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

  @property
  def embedding_matrix(self) -> jax.Array:
    """W_E [V, M]."""
    return self.embed.embedding[...]

  @property
  def unembedding_matrix(self) -> jax.Array:
    """W_U [M, V]."""
    return self.unembed.kernel[...]

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

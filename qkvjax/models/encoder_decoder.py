"""A small pre-LayerNorm encoder-decoder with self- and cross-attention.

The articles' own example is translation, whose decoder uses
*cross*-attention: Q from the decoder, K and V from the encoder. Every
attention block is the shared ``MultiHeadAttention``; its paths read
``encoder/0/self_attn``, ``decoder/1/self_attn`` and ``decoder/1/cross_attn``
(shortened by metrics to ``encoder/L0/self_attn`` etc.).

Letters in names: B batch, S source positions, T target positions, M
d_model, F MLP width, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from qkvjax import attention
from qkvjax.models.attention_block import MultiHeadAttention
from qkvjax.models.hyper import record


def _attention(cfg, rngs):
  return MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.d_head, rngs=rngs,
                            qkv_init=cfg.qkv_init, qkv_init_scale=cfg.qkv_init_scale)


class Mlp(nnx.Module):
  """LN, dense, GELU, dense."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.ln = nnx.LayerNorm(cfg.d_model, epsilon=1e-5, rngs=rngs)
    self.linear_in = nnx.Linear(cfg.d_model, cfg.d_mlp, rngs=rngs)
    self.linear_out = nnx.Linear(cfg.d_mlp, cfg.d_model, rngs=rngs)

  def __call__(self, x):
    return self.linear_out(jax.nn.gelu(self.linear_in(self.ln(x))))


class EncoderLayer(nnx.Module):
  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.ln_self = nnx.LayerNorm(cfg.d_model, epsilon=1e-5, rngs=rngs)
    self.self_attn = _attention(cfg, rngs)
    self.mlp = Mlp(cfg, rngs=rngs)

  def __call__(self, x_BxSxM, key_mask):
    x_BxSxM = x_BxSxM + self.self_attn(self.ln_self(x_BxSxM), mask=key_mask)
    return x_BxSxM + self.mlp(x_BxSxM)


class DecoderLayer(nnx.Module):
  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.ln_self = nnx.LayerNorm(cfg.d_model, epsilon=1e-5, rngs=rngs)
    self.self_attn = _attention(cfg, rngs)
    self.ln_cross = nnx.LayerNorm(cfg.d_model, epsilon=1e-5, rngs=rngs)
    self.cross_attn = _attention(cfg, rngs)
    self.mlp = Mlp(cfg, rngs=rngs)

  def __call__(self, x_BxTxM, memory_BxSxM, causal_TxT, key_mask):
    x_BxTxM = x_BxTxM + self.self_attn(self.ln_self(x_BxTxM), mask=causal_TxT)
    x_BxTxM = x_BxTxM + self.cross_attn(self.ln_cross(x_BxTxM), memory_BxSxM,
                                        mask=key_mask)
    return x_BxTxM + self.mlp(x_BxTxM)


class EncoderDecoder(nnx.Module):
  """``EncoderDecoder(cfg, src_vocab, tgt_vocab, src_len, tgt_len, rngs=...)``;
  ``cfg`` is the ``model`` block (``enc_layers``, ``dec_layers``, sizes)."""

  def __init__(self, cfg, src_vocab: int, tgt_vocab: int, src_len: int, tgt_len: int,
               *, rngs: nnx.Rngs, src_pad: int = 0):
    m = cfg.d_model
    normal = jax.nn.initializers.normal(1.0)
    self.src_embed = nnx.Embed(src_vocab, m, embedding_init=normal, rngs=rngs)
    self.src_pos = nnx.Param(jax.random.normal(rngs.params(), (src_len, m)) * 0.1)
    self.tgt_embed = nnx.Embed(tgt_vocab, m, embedding_init=normal, rngs=rngs)
    self.tgt_pos = nnx.Param(jax.random.normal(rngs.params(), (tgt_len, m)) * 0.1)
    self.encoder = nnx.List([EncoderLayer(cfg, rngs=rngs) for _ in range(cfg.enc_layers)])
    self.decoder = nnx.List([DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.dec_layers)])
    self.ln_enc = nnx.LayerNorm(m, epsilon=1e-5, rngs=rngs)
    self.ln_final = nnx.LayerNorm(m, epsilon=1e-5, rngs=rngs)
    self.unembed = nnx.Linear(m, tgt_vocab, use_bias=False, rngs=rngs)
    self.src_pad = src_pad

  def _key_mask(self, src_BxS):
    return (src_BxS != self.src_pad)[:, None, None, :]

  def encode(self, src_BxS: jax.Array) -> jax.Array:
    """Encoder output [B, S, M], final LayerNorm applied."""
    x_BxSxM = self.src_embed(src_BxS) + self.src_pos[:src_BxS.shape[1]]
    record(self, "src_embed", x_BxSxM)
    key_mask = self._key_mask(src_BxS)
    for layer in self.encoder:
      x_BxSxM = layer(x_BxSxM, key_mask)
    return self.ln_enc(x_BxSxM)

  def decode(self, tgt_in_BxT: jax.Array, memory_BxSxM: jax.Array,
             src_BxS: jax.Array) -> jax.Array:
    """Next-token logits [B, T, V] given the encoder output."""
    t = tgt_in_BxT.shape[1]
    x_BxTxM = self.tgt_embed(tgt_in_BxT) + self.tgt_pos[:t]
    causal_TxT, key_mask = attention.causal_mask(t), self._key_mask(src_BxS)
    for layer in self.decoder:
      x_BxTxM = layer(x_BxTxM, memory_BxSxM, causal_TxT, key_mask)
    return self.unembed(self.ln_final(x_BxTxM))

  def __call__(self, src_BxS: jax.Array, tgt_in_BxT: jax.Array) -> jax.Array:
    """Teacher-forced logits [B, T, V]."""
    return self.decode(tgt_in_BxT, self.encode(src_BxS), src_BxS)

  def greedy_decode(self, src_BxS: jax.Array, tgt_len: int, bos: int) -> jax.Array:
    """Greedy output ids [B, tgt_len]: position t holds the prediction made
    after seeing positions < t (the decoder is re-run on the growing prefix)."""
    memory_BxSxM = self.encode(src_BxS)
    b = src_BxS.shape[0]
    # One spare column so step t can write its prediction at t + 1 unconditionally.
    buf_BxT1 = jnp.zeros((b, tgt_len + 1), jnp.int32).at[:, 0].set(bos)

    def step(t, buf_BxT1):
      logits_BxTxV = self.decode(buf_BxT1[:, :tgt_len], memory_BxSxM, src_BxS)
      next_B = jnp.argmax(logits_BxTxV[:, t], -1).astype(jnp.int32)
      return buf_BxT1.at[:, t + 1].set(next_B)

    return jax.lax.fori_loop(0, tgt_len, step, buf_BxT1)[:, 1:]


# The attention sites of an ``EncoderDecoder``, per kind (a pattern of the layer).
ENCODER_SELF, DECODER_SELF, CROSS = ("encoder/L{}/self_attn", "decoder/L{}/self_attn",
                                     "decoder/L{}/cross_attn")


def sites(cfg, kinds=(ENCODER_SELF, DECODER_SELF, CROSS)) -> list[str]:
  """The attention sites of the given kinds, layer by layer, for the model
  config ``cfg`` (``enc_layers``, ``dec_layers``)."""
  return [k.format(l) for k in kinds
          for l in range(cfg.enc_layers if k.startswith("encoder") else cfg.dec_layers)]


def for_task(cfg, task, rngs: nnx.Rngs) -> EncoderDecoder:
  """The ``EncoderDecoder`` sized for a seq2seq ``task`` (source and target
  vocabularies and lengths): a study's ``model_fn``."""
  return EncoderDecoder(cfg.model, task.src_vocab_size, task.vocab_size, task.src_len,
                        task.tgt_len, rngs=rngs)

"""A small pre-LayerNorm encoder-decoder over plain parameter pytrees.

The articles' own example is translation, whose decoder uses *cross*-attention:
Q from the decoder, K and V from the encoder. Every attention block (encoder
self, decoder causal self, decoder cross) is a dict with its own named
``query``, ``key``, ``value`` [M, H, D] and ``out`` [H, D, M] matrices, so
metrics address e.g. ``decoder/1/cross/key``. All attention goes through
``qkvjax.attention.dot_product_attention``.

Letters in names: B batch, S source (encoder) positions, T target (decoder)
positions, M d_model, H heads, D head dim, F MLP hidden dim, V vocabulary.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from qkvjax import attention
from qkvjax import model as model_lib

Params = dict[str, Any]
ATTN_MATRICES = ("query", "key", "value", "out")
# (stack, block) pairs: the three kinds of attention the metrics separate.
BLOCKS = (("encoder", "self"), ("decoder", "self"), ("decoder", "cross"))


class AttnTrace(NamedTuple):
  """One attention block's internals, for the metrics."""

  query_BxTxHxD: jax.Array
  key_BxSxHxD: jax.Array
  value_BxSxHxD: jax.Array
  logits_BxHxTxS: jax.Array
  weights_BxHxTxS: jax.Array


class Trace(NamedTuple):
  encoder_self: tuple[AttnTrace, ...]
  decoder_self: tuple[AttnTrace, ...]
  decoder_cross: tuple[AttnTrace, ...]


def _ln(m: int) -> Params:
  return {"scale": jnp.ones(m), "bias": jnp.zeros(m)}


def _attn_block(key: jax.Array, cfg: ml_collections.ConfigDict) -> Params:
  """W_Q, W_K, W_V from one initializer (the articles' premise), W_O its own."""
  m, h, d = cfg.d_model, cfg.n_heads, cfg.d_head
  qkv_init = model_lib.QKV_INITIALIZERS[cfg.qkv_init](cfg.qkv_init_scale)
  out_init = jax.nn.initializers.variance_scaling(
      1.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=2)
  k_q, k_k, k_v, k_o = jax.random.split(key, 4)
  return {"query": qkv_init(k_q, (m, h, d)), "key": qkv_init(k_k, (m, h, d)),
          "value": qkv_init(k_v, (m, h, d)), "out": out_init(k_o, (h, d, m))}


def _mlp(key: jax.Array, cfg: ml_collections.ConfigDict) -> Params:
  dense = jax.nn.initializers.lecun_normal()
  k_in, k_out = jax.random.split(key)
  return {"ln": _ln(cfg.d_model), "w_in": dense(k_in, (cfg.d_model, cfg.d_mlp)),
          "b_in": jnp.zeros(cfg.d_mlp), "w_out": dense(k_out, (cfg.d_mlp, cfg.d_model)),
          "b_out": jnp.zeros(cfg.d_model)}


def init_params(key: jax.Array, cfg: ml_collections.ConfigDict, src_vocab: int,
                tgt_vocab: int, src_len: int, tgt_len: int) -> Params:
  """Draws the parameter pytree. ``cfg`` is the ``model`` block of a config."""
  m = cfg.d_model
  keys = iter(jax.random.split(key, 5 + 2 * cfg.enc_layers + 3 * cfg.dec_layers))
  params: Params = {
      "src_embed": jax.random.normal(next(keys), (src_vocab, m)),
      "src_pos": jax.random.normal(next(keys), (src_len, m)) * 0.1,
      "tgt_embed": jax.random.normal(next(keys), (tgt_vocab, m)),
      "tgt_pos": jax.random.normal(next(keys), (tgt_len, m)) * 0.1,
      "ln_enc": _ln(m),
      "ln_final": _ln(m),
      "unembed": jax.nn.initializers.lecun_normal()(next(keys), (m, tgt_vocab)),
      "encoder": [],
      "decoder": [],
  }
  for _ in range(cfg.enc_layers):
    params["encoder"].append({"ln_self": _ln(m), "self": _attn_block(next(keys), cfg),
                              "mlp": _mlp(next(keys), cfg)})
  for _ in range(cfg.dec_layers):
    params["decoder"].append({"ln_self": _ln(m), "self": _attn_block(next(keys), cfg),
                              "ln_cross": _ln(m), "cross": _attn_block(next(keys), cfg),
                              "mlp": _mlp(next(keys), cfg)})
  return params


def attend(block: Params, x_BxTxM: jax.Array, memory_BxSxM: jax.Array,
           mask: jax.Array | None) -> tuple[jax.Array, AttnTrace]:
  """Attention with queries from ``x`` and keys and values from ``memory``.

  Self-attention passes the same array twice; cross-attention passes the
  decoder stream as ``x`` and the encoder output as ``memory``.
  """
  q_BxTxHxD = jnp.einsum("btm,mhd->bthd", x_BxTxM, block["query"])
  k_BxSxHxD = jnp.einsum("bsm,mhd->bshd", memory_BxSxM, block["key"])
  v_BxSxHxD = jnp.einsum("bsm,mhd->bshd", memory_BxSxM, block["value"])
  att = attention.dot_product_attention(q_BxTxHxD, k_BxSxHxD, v_BxSxHxD, mask=mask)
  out_BxTxM = jnp.einsum("bthd,hdm->btm", att.out_BxTxHxD, block["out"])
  return out_BxTxM, AttnTrace(q_BxTxHxD, k_BxSxHxD, v_BxSxHxD, att.logits_BxHxTxS,
                              att.weights_BxHxTxS)


def _mlp_apply(p: Params, x_BxTxM: jax.Array) -> jax.Array:
  h_BxTxF = jax.nn.gelu(model_lib.layer_norm(x_BxTxM, p["ln"]) @ p["w_in"] + p["b_in"])
  return h_BxTxF @ p["w_out"] + p["b_out"]


def encode(params: Params, src_BxS: jax.Array, src_pad: int = 0):
  """Encoder output [B, S, M] (final LayerNorm applied) and its traces."""
  s = src_BxS.shape[1]
  x_BxSxM = params["src_embed"][src_BxS] + params["src_pos"][:s]
  key_mask_Bx1x1xS = (src_BxS != src_pad)[:, None, None, :]
  traces = []
  for layer in params["encoder"]:
    h_BxSxM = model_lib.layer_norm(x_BxSxM, layer["ln_self"])
    a_BxSxM, tr = attend(layer["self"], h_BxSxM, h_BxSxM, key_mask_Bx1x1xS)
    x_BxSxM = x_BxSxM + a_BxSxM
    x_BxSxM = x_BxSxM + _mlp_apply(layer["mlp"], x_BxSxM)
    traces.append(tr)
  return model_lib.layer_norm(x_BxSxM, params["ln_enc"]), tuple(traces)


def decode(params: Params, tgt_in_BxT: jax.Array, memory_BxSxM: jax.Array,
           src_BxS: jax.Array, src_pad: int = 0):
  """Next-phoneme logits [B, T, V] and the self- and cross-attention traces."""
  t = tgt_in_BxT.shape[1]
  x_BxTxM = params["tgt_embed"][tgt_in_BxT] + params["tgt_pos"][:t]
  causal_TxT = attention.causal_mask(t)
  key_mask_Bx1x1xS = (src_BxS != src_pad)[:, None, None, :]
  self_traces, cross_traces = [], []
  for layer in params["decoder"]:
    h_BxTxM = model_lib.layer_norm(x_BxTxM, layer["ln_self"])
    a_BxTxM, tr_self = attend(layer["self"], h_BxTxM, h_BxTxM, causal_TxT)
    x_BxTxM = x_BxTxM + a_BxTxM
    h_BxTxM = model_lib.layer_norm(x_BxTxM, layer["ln_cross"])
    c_BxTxM, tr_cross = attend(layer["cross"], h_BxTxM, memory_BxSxM, key_mask_Bx1x1xS)
    x_BxTxM = x_BxTxM + c_BxTxM
    x_BxTxM = x_BxTxM + _mlp_apply(layer["mlp"], x_BxTxM)
    self_traces.append(tr_self)
    cross_traces.append(tr_cross)
  logits_BxTxV = model_lib.layer_norm(x_BxTxM, params["ln_final"]) @ params["unembed"]
  return logits_BxTxV, tuple(self_traces), tuple(cross_traces)


def forward(params: Params, src_BxS: jax.Array, tgt_in_BxT: jax.Array,
            src_pad: int = 0) -> tuple[jax.Array, Trace]:
  """Teacher-forced logits [B, T, V] and every attention block's trace."""
  memory_BxSxM, enc_traces = encode(params, src_BxS, src_pad)
  logits_BxTxV, dec_self, dec_cross = decode(params, tgt_in_BxT, memory_BxSxM,
                                             src_BxS, src_pad)
  return logits_BxTxV, Trace(enc_traces, dec_self, dec_cross)


def greedy_decode(params: Params, src_BxS: jax.Array, tgt_len: int, bos: int,
                  src_pad: int = 0) -> jax.Array:
  """Greedy output ids [B, tgt_len]: position t holds the prediction made after
  seeing positions < t (the decoder is re-run on the growing prefix)."""
  memory_BxSxM, _ = encode(params, src_BxS, src_pad)
  b = src_BxS.shape[0]
  # One spare column so step t can write its prediction at t + 1 unconditionally.
  buf_BxT1 = jnp.zeros((b, tgt_len + 1), jnp.int32).at[:, 0].set(bos)

  def step(t, buf_BxT1):
    logits_BxTxV, _, _ = decode(params, buf_BxT1[:, :tgt_len], memory_BxSxM,
                                src_BxS, src_pad)
    next_B = jnp.argmax(logits_BxTxV[:, t], -1).astype(jnp.int32)
    return buf_BxT1.at[:, t + 1].set(next_B)

  return jax.lax.fori_loop(0, tgt_len, step, buf_BxT1)[:, 1:]


def named_matrices(params: Params) -> dict[str, jax.Array]:
  """Attention matrices keyed ``<stack>_<block>/L<layer>/<matrix>``,
  e.g. ``decoder_cross/L0/query``."""
  out = {}
  for stack, block in BLOCKS:
    for l, layer in enumerate(params[stack]):
      for name in ATTN_MATRICES:
        out[f"{stack}_{block}/L{l}/{name}"] = layer[block][name]
  return out

"""The one attention block of every qkvjax model.

``MultiHeadAttention`` holds W_Q, W_K, W_V ``[d_model, heads, d_head]`` and W_O
``[heads, d_head, d_model]`` as separate ``nnx.Param`` (tagged with
``heads_axis``) and calls ``qkvjax.attention.dot_product_attention``, the
single place the attention math lives. Variants are structural: with
``tie="qk"`` there is no W_K parameter (the keys use W_Q), with ``tie="qkv"``
neither W_K nor W_V, and with ``value_proj=False`` no W_V (the values are the
input split into heads), so a tied matrix can never silently untie.

Three options, off by default (the program is then unchanged), exist for
pretrained checkpoints (``qkvjax.pretrained``): biases on the projections,
fewer key/value heads than query heads (grouped-query attention) and rotary
positions on the queries and keys.

Letters in names: B batch, T query positions, S key positions, M d_model,
H heads, D head dim.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from qkvjax import attention
from qkvjax.models.hyper import hyper, record, value_of

TIE_MODES = ("none", "qk", "qkv")


def _orthogonal_mhd(key, shape, dtype=jnp.float32):
  """Orthogonal [M, H, D], seen as an M x (H*D) matrix."""
  m, h, d = shape
  return jax.nn.initializers.orthogonal()(key, (m, h * d), dtype).reshape(shape)


# Initializers W_Q, W_K and W_V may be drawn from (fan-in = d_model), each at
# scale 1, with how a scale s multiplies the draw: variance scaling by s
# multiplies the standard deviation by sqrt(s); orthogonal(s) multiplies by s.
QKV_INITIALIZERS = {
    "lecun_normal": (jax.nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=(1, 2)), jnp.sqrt),
    "normal": (jax.nn.initializers.variance_scaling(
        1.0, "fan_in", "normal", in_axis=0, out_axis=(1, 2)), jnp.sqrt),
    "glorot_uniform": (jax.nn.initializers.variance_scaling(
        1.0, "fan_avg", "uniform", in_axis=0, out_axis=(1, 2)), jnp.sqrt),
    "orthogonal": (_orthogonal_mhd, lambda s: s),
}
_OUT_INIT = jax.nn.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=2)


class AttentionTrace(NamedTuple):
  """What one call of an attention block computed, for metrics."""

  input_BxTxM: jax.Array  # the (LayerNormed) input the queries are computed from
  query_BxTxHxD: jax.Array
  key_BxSxHxD: jax.Array
  value_BxSxHxD: jax.Array
  logits_BxHxTxS: jax.Array  # scaled scores, before masking
  weights_BxHxTxS: jax.Array


class MultiHeadAttention(nnx.Module):
  """Multi-head attention with named W_Q, W_K, W_V, W_O.

  Args:
    d_model, n_heads, d_head: sizes.
    tie: "none", "qk" (W_K is W_Q) or "qkv" (W_K and W_V are W_Q).
    value_proj: False: no W_V; values are the input split into heads (needs
      n_heads * d_head == d_model).
    qk_norm: LayerNorm on q and k per head (QK-norm).
    attn_scale: the number the scores are multiplied by (a float, or a traced
      per-run value; see ``hyper``).
    qkv_init, qkv_init_scale: one initializer for W_Q, W_K, W_V (their
      premise: statistically identical at the start) and its scale.
    n_kv_heads: heads of W_K and W_V when fewer than ``n_heads``
      (grouped-query attention: query head h reads key/value head
      h // (n_heads / n_kv_heads)); None: ``n_heads``.
    bias: biases on the query, key, value and output projections.
    rotary_theta: rotary positions (``attention.rotary``) with this base on
      the queries and keys of self-attention; None: none.
  """

  def __init__(self, d_model: int, n_heads: int, d_head: int, *, rngs: nnx.Rngs,
               tie: str = "none", value_proj: bool = True, qk_norm: bool = False,
               attn_scale=None, qkv_init: str = "lecun_normal", qkv_init_scale=1.0,
               n_kv_heads: int | None = None, bias: bool = False,
               rotary_theta: float | None = None):
    if tie not in TIE_MODES:
      raise ValueError(f"tie={tie!r}: expected one of {TIE_MODES}")
    n_kv = n_heads if n_kv_heads is None else n_kv_heads
    if (n_kv != n_heads or bias or rotary_theta is not None) and (
        tie != "none" or not value_proj or qk_norm or n_heads % n_kv):
      raise ValueError(f"n_kv_heads={n_kv_heads}, bias={bias}, rotary_theta={rotary_theta} "
                       "need tie='none', value_proj=True, qk_norm=False and n_kv_heads "
                       f"dividing n_heads={n_heads}")
    self.n_heads, self.d_head, self.n_kv_heads = n_heads, d_head, n_kv
    self.tie, self.value_proj = tie, value_proj
    self.bias, self.rotary_theta = bias, rotary_theta
    init, gain = QKV_INITIALIZERS[qkv_init]
    g = gain(qkv_init_scale)
    shape, kv_shape = (d_model, n_heads, d_head), (d_model, n_kv, d_head)
    # Four keys whatever the variant: W_Q and W_O of a tied model equal the
    # untied model's for the same seed, so conditions compare seed by seed.
    k_q, k_k, k_v, k_o = (rngs.params() for _ in range(4))
    self.query = nnx.Param(init(k_q, shape) * g, heads_axis=1)
    if tie == "none":
      self.key = nnx.Param(init(k_k, kv_shape) * g, heads_axis=1)
    if tie != "qkv" and value_proj:
      self.value = nnx.Param(init(k_v, kv_shape) * g, heads_axis=1)
    self.out = nnx.Param(_OUT_INIT(k_o, (n_heads, d_head, d_model)), heads_axis=0)
    if bias:  # flat, so no metric mistakes a bias for a matrix
      self.query_bias = nnx.Param(jnp.zeros((n_heads * d_head,)))
      self.key_bias = nnx.Param(jnp.zeros((n_kv * d_head,)))
      self.value_bias = nnx.Param(jnp.zeros((n_kv * d_head,)))
      self.out_bias = nnx.Param(jnp.zeros((d_model,)))
    self.qk_norm = qk_norm
    if qk_norm:
      self.q_norm = nnx.LayerNorm(d_head, epsilon=1e-5, rngs=rngs)
      self.k_norm = nnx.LayerNorm(d_head, epsilon=1e-5, rngs=rngs)
    self.attn_scale = hyper(1.0 / math.sqrt(d_head) if attn_scale is None else attn_scale)

  def matrix(self, role: str) -> jax.Array:
    """The effective W_Q, W_K or W_V [M, H, D]: its own parameter, W_Q's when
    tied, or the identity split into heads when there is no value projection;
    with grouped-query attention, each query head's key/value head."""
    if role == "query" or (role == "key" and self.tie != "none") or (
        role == "value" and self.tie == "qkv"):
      return self.query[...]
    if not self.value_proj and role == "value":
      m = self.query.shape[0]
      return jnp.eye(m).reshape(m, self.n_heads, self.d_head)
    w_MxKxD = self.key[...] if role == "key" else self.value[...]
    return self._per_query_head(w_MxKxD, 1)

  def _per_query_head(self, x, axis: int):
    """Key/value heads repeated to one per query head (grouped-query attention)."""
    if self.n_kv_heads == self.n_heads:
      return x
    return jnp.repeat(x, self.n_heads // self.n_kv_heads, axis=axis)

  def _project(self, x_BxTxM, name: str) -> jax.Array:
    """x W (+ b) for ``name`` in query, key, value: [B, T, heads, D]."""
    out = jnp.einsum("btm,mhd->bthd", x_BxTxM, getattr(self, name)[...])
    if self.bias:
      out = out + getattr(self, f"{name}_bias")[...].reshape(out.shape[2:])
    return out

  def __call__(self, x_BxTxM: jax.Array, context_BxSxM: jax.Array | None = None,
               mask: jax.Array | None = None, *, scale=None) -> jax.Array:
    """Attention of queries from ``x`` over keys and values from ``context``
    (``x`` itself for self-attention). ``mask``: boolean, broadcastable to
    [B, H, T, S], True = attend. ``scale`` overrides the block's score scale
    (e.g. 0 for uniform attention at evaluation)."""
    ctx_BxSxM = x_BxTxM if context_BxSxM is None else context_BxSxM
    if self.bias or self.n_kv_heads != self.n_heads or self.rotary_theta is not None:
      return self._call_pretrained(x_BxTxM, ctx_BxSxM, mask, scale)
    q_BxTxHxD = jnp.einsum("btm,mhd->bthd", x_BxTxM, self.query[...])
    if self.tie == "none":
      k_BxSxHxD = jnp.einsum("bsm,mhd->bshd", ctx_BxSxM, self.key[...])
    else:
      k_BxSxHxD = (q_BxTxHxD if context_BxSxM is None else
                   jnp.einsum("bsm,mhd->bshd", ctx_BxSxM, self.query[...]))
    if self.tie == "qkv":
      v_BxSxHxD = k_BxSxHxD
    elif not self.value_proj:
      v_BxSxHxD = ctx_BxSxM.reshape(*ctx_BxSxM.shape[:2], self.n_heads, self.d_head)
    else:
      v_BxSxHxD = jnp.einsum("bsm,mhd->bshd", ctx_BxSxM, self.value[...])
    if self.qk_norm:
      q_BxTxHxD, k_BxSxHxD = self.q_norm(q_BxTxHxD), self.k_norm(k_BxSxHxD)
    att = attention.dot_product_attention(
        q_BxTxHxD, k_BxSxHxD, v_BxSxHxD, mask=mask,
        scale=value_of(self.attn_scale) if scale is None else scale)
    record(self, "trace", AttentionTrace(x_BxTxM, q_BxTxHxD, k_BxSxHxD, v_BxSxHxD,
                                         att.logits_BxHxTxS, att.weights_BxHxTxS))
    return jnp.einsum("bthd,hdm->btm", att.out_BxTxHxD, self.out[...])

  def _call_pretrained(self, x_BxTxM, ctx_BxSxM, mask, scale) -> jax.Array:
    """``__call__`` with biases, grouped-query heads or rotary positions (no
    tying, QK-norm or missing W_V: no pretrained architecture has them). The
    trace holds the projections before the rotation, one key/value head per
    query head."""
    q_BxTxHxD = self._project(x_BxTxM, "query")
    k_BxSxHxD = self._per_query_head(self._project(ctx_BxSxM, "key"), 2)
    v_BxSxHxD = self._per_query_head(self._project(ctx_BxSxM, "value"), 2)
    q_rot, k_rot = q_BxTxHxD, k_BxSxHxD
    if self.rotary_theta is not None:
      q_rot = attention.rotary(q_BxTxHxD, self.rotary_theta)
      k_rot = attention.rotary(k_BxSxHxD, self.rotary_theta)
    att = attention.dot_product_attention(
        q_rot, k_rot, v_BxSxHxD, mask=mask,
        scale=value_of(self.attn_scale) if scale is None else scale)
    record(self, "trace", AttentionTrace(x_BxTxM, q_BxTxHxD, k_BxSxHxD, v_BxSxHxD,
                                         att.logits_BxHxTxS, att.weights_BxHxTxS))
    out_BxTxM = jnp.einsum("bthd,hdm->btm", att.out_BxTxHxD, self.out[...])
    return out_BxTxM + self.out_bias[...] if self.bias else out_BxTxM

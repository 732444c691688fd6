"""A small pre-LayerNorm transformer over plain parameter pytrees.

Parameters are a nested dict so every matrix has a readable path, e.g.
``layers/0/query`` of shape [d_model, H, D]. Each head is a slice along the
H axis, so metrics can address it without reshaping. W_Q, W_K and W_V are
drawn from the same initializer (the seed articles' premise); W_O and the
rest have their own.

Letters in names: B batch, T positions, M d_model, H heads, D head dim,
F MLP hidden dim, V vocabulary.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from qkvjax import attention

Params = dict[str, Any]

# Initializers W_Q, W_K and W_V may be drawn from (all fan-in = d_model).
QKV_INITIALIZERS = {
    "lecun_normal": lambda scale: jax.nn.initializers.variance_scaling(
        scale, "fan_in", "truncated_normal", in_axis=0, out_axis=(1, 2)),
    "normal": lambda scale: jax.nn.initializers.variance_scaling(
        scale, "fan_in", "normal", in_axis=0, out_axis=(1, 2)),
    "glorot_uniform": lambda scale: jax.nn.initializers.variance_scaling(
        scale, "fan_avg", "uniform", in_axis=0, out_axis=(1, 2)),
    "orthogonal": lambda scale: _orthogonal_mhd(scale),
}

ATTN_MATRICES = ("query", "key", "value", "out")
# Weight tying: which projections share W_Q's parameters ("none": separate).
TIE_MODES = ("none", "qk", "qkv")


def _orthogonal_mhd(scale):
  """Orthogonal init for a [M, H, D] tensor, seen as an M x (H*D) matrix."""
  base = jax.nn.initializers.orthogonal(scale)

  def init(key, shape, dtype=jnp.float32):
    m, h, d = shape
    return base(key, (m, h * d), dtype).reshape(shape)

  return init


class LayerTrace(NamedTuple):
  """Per-layer internals the metrics read; XLA drops what no metric uses."""

  resid_in_BxTxM: jax.Array
  query_BxTxHxD: jax.Array
  key_BxTxHxD: jax.Array
  value_BxTxHxD: jax.Array
  attn_logits_BxHxTxT: jax.Array
  attn_weights_BxHxTxT: jax.Array


class Trace(NamedTuple):
  token_embed_BxTxM: jax.Array
  layers: tuple[LayerTrace, ...]
  final_resid_BxTxM: jax.Array


def init_params(key: jax.Array, cfg: ml_collections.ConfigDict,
                vocab_size: int, seq_len: int) -> Params:
  """Draws a parameter pytree. ``cfg`` is the ``model`` block of a config."""
  m, h, d, f = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
  qkv_init = QKV_INITIALIZERS[cfg.qkv_init](cfg.qkv_init_scale)
  out_init = jax.nn.initializers.variance_scaling(
      1.0, "fan_in", "truncated_normal", in_axis=(0, 1), out_axis=2)
  dense = jax.nn.initializers.lecun_normal()
  keys = iter(jax.random.split(key, 3 + 6 * cfg.n_layers))
  params: Params = {
      "embed": jax.random.normal(next(keys), (vocab_size, m)),
      "pos_embed": jax.random.normal(next(keys), (seq_len, m)) * 0.1,
      "ln_final": {"scale": jnp.ones(m), "bias": jnp.zeros(m)},
      "unembed": dense(next(keys), (m, vocab_size)),
      "layers": [],
  }
  for _ in range(cfg.n_layers):
    layer = {
        "ln_attn": {"scale": jnp.ones(m), "bias": jnp.zeros(m)},
        "query": qkv_init(next(keys), (m, h, d)),
        "key": qkv_init(next(keys), (m, h, d)),
        "value": qkv_init(next(keys), (m, h, d)),
        "out": out_init(next(keys), (h, d, m)),
    }
    # Tied or absent projections are not parameters at all (see projections).
    if cfg.tie in ("qk", "qkv"):
      del layer["key"]
    if cfg.tie == "qkv" or not cfg.value_proj:
      del layer["value"]
    if cfg.qk_norm:
      layer["q_norm"] = {"scale": jnp.ones(d), "bias": jnp.zeros(d)}
      layer["k_norm"] = {"scale": jnp.ones(d), "bias": jnp.zeros(d)}
    mlp_keys = jax.random.split(next(keys))
    if cfg.mlp:
      layer["ln_mlp"] = {"scale": jnp.ones(m), "bias": jnp.zeros(m)}
      layer["mlp_in"] = dense(mlp_keys[0], (m, f))
      layer["mlp_in_bias"] = jnp.zeros(f)
      layer["mlp_out"] = dense(mlp_keys[1], (f, m))
      layer["mlp_out_bias"] = jnp.zeros(m)
    next(keys)  # keeps key use independent of cfg.mlp
    params["layers"].append(layer)
  return params


def projections(layer: Params, h_BxTxM: jax.Array, cfg: ml_collections.ConfigDict):
  """q, k, v [B, T, H, D] of one layer, honouring tying, value_proj, qk_norm."""
  w_q = layer["query"]
  w_k = layer.get("key", w_q)  # tie "qk"/"qkv": W_K is W_Q
  q_BxTxHxD = jnp.einsum("btm,mhd->bthd", h_BxTxM, w_q)
  k_BxTxHxD = jnp.einsum("btm,mhd->bthd", h_BxTxM, w_k)
  if cfg.tie == "qkv":
    v_BxTxHxD = q_BxTxHxD
  elif not cfg.value_proj:  # V is the layer input itself, split into heads
    v_BxTxHxD = h_BxTxM.reshape(*h_BxTxM.shape[:2], cfg.n_heads, cfg.d_head)
  else:
    v_BxTxHxD = jnp.einsum("btm,mhd->bthd", h_BxTxM, layer["value"])
  if cfg.qk_norm:
    q_BxTxHxD = layer_norm(q_BxTxHxD, layer["q_norm"])
    k_BxTxHxD = layer_norm(k_BxTxHxD, layer["k_norm"])
  return q_BxTxHxD, k_BxTxHxD, v_BxTxHxD


def value_matrix(layer: Params, cfg: ml_collections.ConfigDict) -> jax.Array:
  """The effective W_V [M, H, D]: its own, W_Q's when tied, or the identity
  split into heads when there is no value projection."""
  if cfg.tie == "qkv":
    return layer["query"]
  if not cfg.value_proj:
    return jnp.eye(cfg.d_model).reshape(cfg.d_model, cfg.n_heads, cfg.d_head)
  return layer["value"]


def layer_norm(x_BxTxM: jax.Array, ln: Params, eps: float = 1e-5) -> jax.Array:
  mean = x_BxTxM.mean(-1, keepdims=True)
  var = ((x_BxTxM - mean) ** 2).mean(-1, keepdims=True)
  return (x_BxTxM - mean) * jax.lax.rsqrt(var + eps) * ln["scale"] + ln["bias"]


def attn_scale(cfg: ml_collections.ConfigDict) -> float | str | None:
  """The ``scale`` argument for attention from ``cfg.attn_scale``."""
  if cfg.attn_scale == attention.INV_SQRT_DK:
    return attention.INV_SQRT_DK
  if cfg.attn_scale == "none":
    return None
  return float(cfg.attn_scale)


def residual(x_BxTxM: jax.Array, branch_BxTxM: jax.Array,
             cfg: ml_collections.ConfigDict) -> jax.Array:
  """x + alpha * branch with a residual stream, else the branch alone."""
  if not cfg.residual:
    return branch_BxTxM
  return x_BxTxM + cfg.residual_scale * branch_BxTxM


def forward(params: Params, tokens_BxT: jax.Array,
            cfg: ml_collections.ConfigDict) -> tuple[jax.Array, Trace]:
  """Returns next-token logits [B, T, V] and the per-layer trace."""
  t = tokens_BxT.shape[1]
  tok_BxTxM = params["embed"][tokens_BxT]
  x_BxTxM = tok_BxTxM + params["pos_embed"][:t]
  mask_TxT = attention.causal_mask(t) if cfg.causal else None
  traces = []
  for layer in params["layers"]:
    h_BxTxM = layer_norm(x_BxTxM, layer["ln_attn"])
    q_BxTxHxD, k_BxTxHxD, v_BxTxHxD = projections(layer, h_BxTxM, cfg)
    att = attention.dot_product_attention(
        q_BxTxHxD, k_BxTxHxD, v_BxTxHxD, mask=mask_TxT, scale=attn_scale(cfg))
    attn_BxTxM = jnp.einsum("bthd,hdm->btm", att.out_BxTxHxD, layer["out"])
    traces.append(LayerTrace(x_BxTxM, q_BxTxHxD, k_BxTxHxD, v_BxTxHxD,
                             att.logits_BxHxTxS, att.weights_BxHxTxS))
    x_BxTxM = residual(x_BxTxM, attn_BxTxM, cfg)
    if cfg.mlp:
      h_BxTxM = layer_norm(x_BxTxM, layer["ln_mlp"])
      h_BxTxF = jax.nn.gelu(h_BxTxM @ layer["mlp_in"] + layer["mlp_in_bias"])
      mlp_BxTxM = h_BxTxF @ layer["mlp_out"] + layer["mlp_out_bias"]
      x_BxTxM = residual(x_BxTxM, mlp_BxTxM, cfg)
  final_BxTxM = layer_norm(x_BxTxM, params["ln_final"])
  logits_BxTxV = final_BxTxM @ params["unembed"]
  return logits_BxTxV, Trace(tok_BxTxM, tuple(traces), x_BxTxM)

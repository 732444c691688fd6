"""Scaled dot-product attention as a pure function of arrays.

Shapes are spelled in the names: B batch, T query positions, S key positions,
H heads, D head dimension (d_k = d_v = D here).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

# The default scale, 1/sqrt(d_k). Pass ``scale=None`` (or "none", as configs
# spell it) for no scaling (a scale of 1) or a number to use that number.
INV_SQRT_DK = "inv_sqrt_dk"
NO_SCALE = "none"

# The three projections, by the names the models give their parameters.
QKV = ("query", "key", "value")


class Attention(NamedTuple):
  """What attention computed: the output and, for metrics, its internals."""

  out_BxTxHxD: jax.Array
  logits_BxHxTxS: jax.Array  # scaled scores, before masking
  weights_BxHxTxS: jax.Array  # softmax of the masked logits


def resolve_scale(scale: float | str | None | jax.Array, d_k: int) -> float | jax.Array:
  """The number the scores are multiplied by, from a ``scale`` argument or a
  config's ``attn_scale``: ``INV_SQRT_DK``, None or ``NO_SCALE`` (1), or a
  number (also as a string); an array, e.g. a per-run value traced under
  ``vmap``, is used as it is. ValueError for anything else."""
  if isinstance(scale, jax.Array):
    return scale
  if scale == INV_SQRT_DK:
    return 1.0 / math.sqrt(d_k)
  if scale is None or scale == NO_SCALE:
    return 1.0
  try:
    return float(scale)
  except (TypeError, ValueError):
    raise ValueError(f"scale={scale!r}: expected {INV_SQRT_DK!r}, {NO_SCALE!r}, None or "
                     "a number") from None


def causal_mask(t: int, s: int | None = None) -> jax.Array:
  """Boolean [T, S] mask, True where query t may attend to key s (s <= t)."""
  s = t if s is None else s
  return jnp.tril(jnp.ones((t, s), dtype=bool), k=s - t)


def dot_product_attention(
    query_BxTxHxD: jax.Array,
    key_BxSxHxD: jax.Array,
    value_BxSxHxD: jax.Array,
    mask: jax.Array | None = None,
    scale: float | str | None | jax.Array = INV_SQRT_DK,
) -> Attention:
  """softmax(scale * Q K^T) V per head, with the softmax in float32.

  Args:
    query_BxTxHxD: queries.
    key_BxSxHxD: keys.
    value_BxSxHxD: values.
    mask: optional boolean mask broadcastable to [B, H, T, S]; True = attend.
    scale: ``INV_SQRT_DK`` (default), ``None`` for no scaling, a number or
      a scalar array.

  Returns:
    ``Attention(out, logits, weights)``.
  """
  d_k = query_BxTxHxD.shape[-1]
  logits_BxHxTxS = jnp.einsum(
      "bthd,bshd->bhts", query_BxTxHxD, key_BxSxHxD
  ).astype(jnp.float32) * resolve_scale(scale, d_k)
  masked_BxHxTxS = logits_BxHxTxS
  if mask is not None:
    masked_BxHxTxS = jnp.where(
        mask, logits_BxHxTxS, jnp.finfo(jnp.float32).min
    )
  weights_BxHxTxS = jax.nn.softmax(masked_BxHxTxS, axis=-1)
  out_BxTxHxD = jnp.einsum(
      "bhts,bshd->bthd", weights_BxHxTxS.astype(value_BxSxHxD.dtype), value_BxSxHxD
  )
  return Attention(out_BxTxHxD, logits_BxHxTxS, weights_BxHxTxS)


def rotary(x_BxTxHxD: jax.Array, theta: float, offset: int = 0) -> jax.Array:
  """Rotary position embedding (Su et al. 2021) in the split-halves layout of
  GPT-NeoX and Hugging Face Llama/Mistral: dimension i < D/2 is rotated with
  dimension i + D/2 by angle p * theta^(-2i/D) at position p = offset + t.
  Applied to queries and keys, it makes their dot product depend on the
  positions only through their difference."""
  t, d = x_BxTxHxD.shape[1], x_BxTxHxD.shape[-1]
  inv_freq_F = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  angle_TxF = (offset + jnp.arange(t, dtype=jnp.float32))[:, None] * inv_freq_F[None, :]
  cos_TxD = jnp.concatenate([jnp.cos(angle_TxF)] * 2, -1)[None, :, None, :]
  sin_TxD = jnp.concatenate([jnp.sin(angle_TxF)] * 2, -1)[None, :, None, :]
  x1, x2 = jnp.split(x_BxTxHxD, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], -1)
  return (x_BxTxHxD * cos_TxD + rotated * sin_TxD).astype(x_BxTxHxD.dtype)

"""Per-matrix metrics found from parameter paths, for any NNX model.

Every ``nnx.Param`` of two or more dimensions is a *matrix*, named by its
short path (``L0/query``, ``embed/embedding``). A matrix with ``heads_axis``
metadata is an attention matrix: [M, H, D] (``heads_axis=1``: W_Q, W_K, W_V)
or [H, D, M] (``heads_axis=0``: W_O); its heads are slices along that axis.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from qkvjax.models import site_name

QKV = ("query", "key", "value")


class Matrix(NamedTuple):
  value: jax.Array
  heads_axis: int | None


def frobenius(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32))))


def cosine(a: jax.Array, b: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Cosine along the last axis."""
  return jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
                               + eps)


def matrices(state: nnx.State) -> dict[str, Matrix]:
  """Every parameter of ndim >= 2, keyed by its short path."""
  out = {}
  for path, var in nnx.to_flat_state(state):
    value = var.get_value()
    if value.ndim >= 2:
      out[site_name(path)] = Matrix(value, var.get_metadata().get("heads_axis"))
  return out


def attention_matrices(state: nnx.State) -> dict[str, Matrix]:
  """The matrices tagged with ``heads_axis``."""
  return {k: m for k, m in matrices(state).items() if m.heads_axis is not None}


def _split(key: str) -> tuple[str, str]:
  site, _, name = key.rpartition("/")
  return site, name


def as_2d(m: Matrix) -> jax.Array:
  """An attention matrix as d_model x (H*D) (or (H*D) x d_model for W_O)."""
  w = m.value
  return w.reshape(-1, w.shape[-1]) if m.heads_axis == 0 else w.reshape(w.shape[0], -1)


def grad_norms(grads: nnx.State) -> dict[str, jax.Array]:
  """Gradient norm of every matrix and of every head of an attention matrix
  (``grad_norm/L0/query``, ``grad_norm/L0/H1/query``)."""
  out = {}
  for key, g in matrices(grads).items():
    out[f"grad_norm/{key}"] = frobenius(g.value)
    if g.heads_axis is not None:
      site, name = _split(key)
      prefix = f"{site}/" if site else ""
      for h in range(g.value.shape[g.heads_axis]):
        out[f"grad_norm/{prefix}H{h}/{name}"] = frobenius(
            jnp.take(g.value, h, axis=g.heads_axis))
  return out


def weight_norms(m) -> dict[str, jax.Array]:
  """Per matrix: gradient norm (and per head), norm of the next update,
  distance and relative distance from initialization, parameter norm."""
  out = grad_norms(m.grads)
  p, p0, u = matrices(m.params), matrices(m.init_params), matrices(m.updates)
  for key in p:
    dist = frobenius(p[key].value - p0[key].value)
    out[f"update_norm/{key}"] = frobenius(u[key].value)
    out[f"dist_init/{key}"] = dist
    out[f"rel_dist_init/{key}"] = dist / (frobenius(p0[key].value) + 1e-12)
    out[f"param_norm/{key}"] = frobenius(p[key].value)
  return out


def effective_rank(s: jax.Array) -> jax.Array:
  """exp(entropy) of the normalized singular values (Roy & Vetterli 2007)."""
  p = s / (jnp.sum(s) + 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(p + 1e-30), 0.0)))


def spectrum_metrics(params: nnx.State, init_params: nnx.State) -> dict[str, jax.Array]:
  """Singular values and effective rank of each attention matrix, and the
  cosine between the cumulative updates W - W_init of each pair of W_Q,
  W_K, W_V of a site."""
  out = {}
  p, p0 = attention_matrices(params), attention_matrices(init_params)
  deltas: dict[str, dict[str, jax.Array]] = {}
  for key, m in p.items():
    s = jnp.linalg.svd(as_2d(m), compute_uv=False)
    out[f"eff_rank/{key}"] = effective_rank(s)
    for i in range(s.shape[0]):
      out[f"sv/{key}/{i:03d}"] = s[i]
    site, name = _split(key)
    if name in QKV:
      deltas.setdefault(site, {})[name] = (m.value - p0[key].value).ravel()
  for site, d in deltas.items():
    prefix = f"{site}/" if site else ""
    for a, b in (("query", "key"), ("query", "value"), ("key", "value")):
      if a in d and b in d:
        out[f"update_cos/{prefix}{a}_{b}"] = cosine(d[a], d[b])
  return out


def spectra(m) -> dict[str, jax.Array]:
  """``spectrum_metrics`` of a Measurement."""
  return spectrum_metrics(m.params, m.init_params)

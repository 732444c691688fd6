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
import numpy as np
from flax import nnx

from qkvjax.attention import QKV
from qkvjax.metrics.host import HostMetric
from qkvjax.models import site_name


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


def effective_rank(s):
  """exp(entropy) of the normalized singular values along the last axis (Roy
  & Vetterli 2007): with jax for a jax array (traced too), else with numpy
  at the input's precision."""
  xp = jnp if isinstance(s, jax.Array) else np
  p = s / (xp.sum(s, -1, keepdims=True) + 1e-12)
  return xp.exp(-xp.sum(xp.where(p > 0, p * xp.log(p + 1e-30), 0.0), -1))


def update_cosines(params: nnx.State, init_params: nnx.State) -> dict[str, jax.Array]:
  """The cosine between the cumulative updates W - W_init of each pair of
  W_Q, W_K, W_V of a site (``update_cos/L0/query_key``)."""
  p, p0 = attention_matrices(params), attention_matrices(init_params)
  deltas: dict[str, dict[str, jax.Array]] = {}
  for key, m in p.items():
    site, name = _split(key)
    if name in QKV:
      deltas.setdefault(site, {})[name] = (m.value - p0[key].value).ravel()
  out = {}
  for site, d in deltas.items():
    prefix = f"{site}/" if site else ""
    for a, b in (("query", "key"), ("query", "value"), ("key", "value")):
      if a in d and b in d:
        out[f"update_cos/{prefix}{a}_{b}"] = cosine(d[a], d[b])
  return out


def spectrum_values(matrices_2d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Singular values (``sv/<matrix>/000``...) and effective rank of each
  matrix, from [runs, rows, cols] host arrays, in float64 numpy."""
  out = {}
  for key, w in matrices_2d.items():
    s = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)  # [runs, k]
    out[f"eff_rank/{key}"] = effective_rank(s)
    for i in range(s.shape[-1]):
      out[f"sv/{key}/{i:03d}"] = s[..., i]
  return out


def _collect_spectra(m) -> dict[str, jax.Array]:
  out = {f"matrix/{k}": as_2d(x) for k, x in attention_matrices(m.params).items()}
  out.update({f"scalar/{k}": v for k, v in update_cosines(m.params, m.init_params).items()})
  return out


def _finish_spectra(got: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {k[len("scalar/"):]: v for k, v in got.items() if k.startswith("scalar/")}
  out.update(spectrum_values({k[len("matrix/"):]: v for k, v in got.items()
                              if k.startswith("matrix/")}))
  return out


def spectrum_metrics(params: nnx.State, init_params: nnx.State) -> dict[str, np.ndarray]:
  """Singular values and effective rank of each attention matrix (as
  d_model x H*D), and the update cosines; on one run's state, eagerly."""
  out = {k: np.asarray(v) for k, v in update_cosines(params, init_params).items()}
  out.update({k: v for k, v in spectrum_values(
      {k: np.asarray(as_2d(x)) for k, x in attention_matrices(params).items()}).items()})
  return out


# Singular values are computed on the host, after the run axis is gathered:
# XLA's CPU SVD (and QR-based SVD, and eigvalsh) deadlocked inside a program
# sharded over several CPU devices, each device's LAPACK call holding a worker
# thread while its sub-tasks waited for one.
spectra = HostMetric(_collect_spectra, _finish_spectra)


def matrix_grad_norms(m) -> dict:
  """Gradient norm of every matrix (not per head: hundreds of keys at depth 16)."""
  return {f"grad_norm/{k}": frobenius(g.value)
          for k, g in matrices(m.grads).items()}

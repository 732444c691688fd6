"""Circuit-level scores of the trained weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qkvjax.models import MultiHeadAttention, site_name


def _eigvals(m: jax.Array) -> jax.Array:
  """Eigenvalues of a small real matrix; host fallback where XLA lacks eig."""
  if jax.default_backend() in ("cpu", "gpu", "cuda", "rocm"):
    return jnp.linalg.eigvals(m)
  shape = jax.ShapeDtypeStruct(m.shape[:-1], jnp.complex64)
  return jax.pure_callback(lambda a: np.linalg.eigvals(a).astype(np.complex64),
                           shape, m, vmap_method="sequential")


def ov_copying_score(w_e_VxM, w_v_MxD, w_o_DxM, w_u_MxV) -> jax.Array:
  """sum(Re lambda) / sum(|lambda|) over the eigenvalues of the OV circuit
  W_E W_V W_O W_U (Elhage et al. 2021): 1 for a head that copies its input
  token to the output, -1 for one that suppresses it. Its nonzero
  eigenvalues equal those of the D x D matrix W_O W_U W_E W_V, used here."""
  lam = _eigvals(w_o_DxM @ w_u_MxV @ w_e_VxM @ w_v_MxD)
  return jnp.sum(lam.real) / (jnp.sum(jnp.abs(lam)) + 1e-12)


def attention_modules(model: nnx.Module) -> dict[str, MultiHeadAttention]:
  """Every ``MultiHeadAttention`` of a model, by site name."""
  return {site_name(path): mod for path, mod in nnx.iter_modules(model)
          if isinstance(mod, MultiHeadAttention)}


def ov_copying(m) -> dict[str, jax.Array]:
  """Copying score per head of every attention site, for models with
  ``embedding_matrix`` and ``unembedding_matrix`` (LayerNorm gains left out,
  as in Elhage et al.)."""
  model = m.model
  if not hasattr(model, "embedding_matrix"):
    return {}
  w_e, w_u = model.embedding_matrix, model.unembedding_matrix
  out = {}
  for site, attn in attention_modules(model).items():
    w_v, w_o = attn.matrix("value"), attn.out[...]
    for h in range(attn.n_heads):
      out[f"ov_copying/{site}/H{h}"] = ov_copying_score(w_e, w_v[:, h], w_o[h], w_u)
  return out

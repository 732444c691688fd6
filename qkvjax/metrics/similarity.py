"""How similar a layer's Q, K, V vectors are to the tokens' own embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qkvjax.attention import QKV


def linear_cka(x_NxA: jax.Array, y_NxB: jax.Array) -> jax.Array:
  """Linear centered kernel alignment (Kornblith et al. 2019)."""
  x = x_NxA - x_NxA.mean(0)
  y = y_NxB - y_NxB.mean(0)
  xty = jnp.sum(jnp.square(x.T @ y))
  return xty / (jnp.sqrt(jnp.sum(jnp.square(x.T @ x)) *
                         jnp.sum(jnp.square(y.T @ y))) + 1e-12)


def rsa(x_NxA: jax.Array, y_NxB: jax.Array) -> jax.Array:
  """Representational similarity: Pearson correlation of the off-diagonal
  cosine-similarity matrices of two sets of vectors for the same N items."""
  def cos_matrix(z):
    z = z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-12)
    return z @ z.T
  n = x_NxA.shape[0]
  off = ~jnp.eye(n, dtype=bool)
  a = jnp.where(off, cos_matrix(x_NxA), 0.0)
  b = jnp.where(off, cos_matrix(y_NxB), 0.0)
  count = n * (n - 1)
  a_c = jnp.where(off, a - a.sum() / count, 0.0)
  b_c = jnp.where(off, b - b.sum() / count, 0.0)
  return jnp.sum(a_c * b_c) / (jnp.sqrt(jnp.sum(a_c**2) * jnp.sum(b_c**2)) + 1e-12)


def embedding_similarity(m) -> dict[str, jax.Array]:
  """CKA and RSA between each self-attention site's Q, K, V vectors and the
  token embeddings (``cka_embed/L0/value``), for models that sow
  ``token_embed``."""
  emb_BxTxM = m.captured.values.get("token_embed")
  if emb_BxTxM is None:
    return {}
  emb_NxM = emb_BxTxM.reshape(-1, emb_BxTxM.shape[-1])
  out = {}
  for site, tr in m.captured.attention.items():
    if tr.key_BxSxHxD.shape[:2] != emb_BxTxM.shape[:2]:
      continue  # cross-attention: keys and values are not these tokens
    for name, x in zip(QKV, (tr.query_BxTxHxD, tr.key_BxSxHxD, tr.value_BxSxHxD)):
      flat_NxF = x.reshape(emb_NxM.shape[0], -1)
      out[f"cka_embed/{site}/{name}"] = linear_cka(flat_NxF, emb_NxM)
      out[f"rsa_embed/{site}/{name}"] = rsa(flat_NxF, emb_NxM)
  return out


def linear_probe_accuracy(x_NxF: jax.Array, label_N: jax.Array, fit_N: np.ndarray,
                          ridge: float) -> jax.Array:
  """Held-out accuracy of a ridge probe for a 0/1 label: standardized
  features, w = (Z'Z + ridge n I)^-1 Z'(y - ybar) with y = +-1, fitted where
  ``fit_N`` (static) is True, scored on the other rows."""
  fit, held = np.flatnonzero(fit_N), np.flatnonzero(~fit_N)
  x = x_NxF.astype(jnp.float32)
  sd_F = x[fit].std(0)
  z_NxF = (x - x[fit].mean(0)) / (sd_F + 1e-6 * jnp.mean(sd_F) + 1e-20)
  y_N = 2.0 * label_N.astype(jnp.float32) - 1.0
  y_bar, z_fit = y_N[fit].mean(), z_NxF[fit]
  gram_FxF = z_fit.T @ z_fit + ridge * len(fit) * jnp.eye(x.shape[1])
  # Conjugate gradient (matmuls only): LAPACK-backed solves hung the CPU backend of
  # jax 0.10.2 when a dozen sat in one vmapped program (solve at 2 seeds, cho_solve at 8).
  w_F = jax.scipy.sparse.linalg.cg(gram_FxF, z_fit.T @ (y_N[fit] - y_bar), tol=1e-6,
                                   maxiter=2 * x.shape[1])[0]
  return jnp.mean(((z_NxF[held] @ w_F + y_bar) > 0) == (label_N[held] > 0))

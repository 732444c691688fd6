"""Circuit-level scores of the trained weights: the OV copying score
(Elhage et al. 2021) and the symmetry and directionality of W_Q W_K^T
(Saponati et al. 2025)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qkvjax.metrics.host import HostMetric
from qkvjax.models import MultiHeadAttention, site_name


def _eigvals(m: jax.Array) -> jax.Array:
  """Eigenvalues of a small real matrix; host fallback where XLA lacks eig.
  Only for unsharded programs (one model's weights, ``qkvjax.pretrained``):
  measurements of a training run use ``ov_copying``, finished on the host."""
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


def ov_matrices(model: nnx.Module) -> dict[str, jax.Array]:
  """Per head of every attention site, the D x D matrix W_O W_U W_E W_V whose
  eigenvalues are the OV circuit's nonzero ones ({} without an
  ``embedding_matrix`` and ``unembedding_matrix``; LayerNorm gains left out,
  as in Elhage et al.)."""
  if not hasattr(model, "embedding_matrix"):
    return {}
  w_e, w_u = model.embedding_matrix, model.unembedding_matrix
  out = {}
  for site, attn in attention_modules(model).items():
    w_v, w_o = attn.matrix("value"), attn.out[...]
    for h in range(attn.n_heads):
      out[f"{site}/H{h}"] = w_o[h] @ w_u @ w_e @ w_v[:, h]
  return out


def copying_from_matrices(ov_RxDxD: np.ndarray) -> np.ndarray:
  """``ov_copying_score`` of [runs, D, D] host arrays, in float64 numpy."""
  lam = np.linalg.eigvals(np.asarray(ov_RxDxD, np.float64))
  return np.sum(lam.real, -1) / (np.sum(np.abs(lam), -1) + 1e-12)


def _collect_ov(m) -> dict[str, jax.Array]:
  return ov_matrices(m.model)


def _finish_ov(got: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {f"ov_copying/{k}": copying_from_matrices(v).astype(np.float32)
          for k, v in got.items()}


# Copying score per head of every attention site (``ov_copying/L0/H0``). The
# eigenvalues are computed on the host, after the run axis is gathered: XLA's
# CPU eigendecomposition (LAPACK geev) inside a program sharded over several
# CPU devices deadlocked, each device's call holding a worker thread of the
# pool its own sub-tasks waited for (as the SVD did; ``metrics.spectra``).
ov_copying = HostMetric(_collect_ov, _finish_ov)


# ---- weight-level structure of W_Q W_K^T (Saponati et al. 2025) -------------------
# The attention score of query token i on key token j is x_i^T M x_j with
# M = W_Q W_K^T (d_model x d_model, residual-stream basis; the score scale
# and the softmax do not change M's structure). Rows of M belong to the
# query side, columns to the key side.

DIRECTIONALITY_NUM_STD = 2.0  # the paper's threshold: mean + 2 std of the norms

# Published medians over a model's layers (Saponati et al. 2025; the symmetry
# and directionality tables of the paper's repository, matteosaponati/
# attention-geometry, _results/table-*-scores-language.txt): (model, objective,
# symmetry, directionality). Its two rows for Llama-3-8B agree on symmetry
# (0.00) but not on directionality ("llama3-8b" -0.65, "meta-llama/
# Meta-Llama-3-8B" 0.01); the first is listed.
PUBLISHED_MEDIANS = (
    ("bert-tiny (google/bert_uncased_L-2_H-128_A-2)", "bidirectional", 0.77, -0.79),
    ("bert-mini (google/bert_uncased_L-4_H-256_A-4)", "bidirectional", 0.62, -0.33),
    ("bert-base-uncased", "bidirectional", 0.51, -0.08),
    ("bert-large-uncased", "bidirectional", 0.44, -0.03),
    ("gpt2", "causal", 0.15, -0.58),
    ("distilgpt2", "causal", 0.19, -0.51),
    ("gpt2-large", "causal", 0.17, -0.32),
    ("Llama-3-8B", "causal", 0.00, -0.65),
)


def symmetry_score(m_MxM: jax.Array) -> jax.Array:
  """2 ||(M + M^T)/2||_F^2 / ||M||_F^2 - 1 = <M, M^T> / ||M||_F^2, in [-1, 1]:
  1 for a symmetric M, -1 for an antisymmetric one, about 0 (exactly: 2 Beta
  (d(d+1)/4, d(d-1)/4) - 1) for i.i.d. Gaussian entries. The score Saponati
  et al. (2025) tabulate (their ratio ||S||^2/||M||^2, mapped to [-1, 1])."""
  m_MxM = m_MxM.astype(jnp.float32)
  return jnp.sum(m_MxM * m_MxM.T) / (jnp.sum(m_MxM * m_MxM) + 1e-30)


def _excess(norms_N: jax.Array, num_std: float) -> jax.Array:
  """Summed excess of the norms above mean + num_std * std (std with n - 1)."""
  threshold = jnp.mean(norms_N) + num_std * jnp.std(norms_N, ddof=1)
  return jnp.sum(jnp.where(norms_N > threshold, norms_N - threshold, 0.0))


def directionality_score(m_MxM: jax.Array,
                         num_std: float = DIRECTIONALITY_NUM_STD) -> jax.Array:
  """(r - c) / (r + c) in [-1, 1] (Saponati et al. 2025), where r (c) sums
  how far the Euclidean norms of M's rows (columns) exceed their mean plus
  ``num_std`` standard deviations; 0 when no norm does. Negative: a few
  dominant *columns* (key-side directions every query reads: the
  autoregressive signature); positive: dominant rows; 0 for any symmetric M
  (its row and column norms are equal) and d(M^T) = -d(M). The sign is the
  paper's tables' (the negative of its code's ``directionality_score``)."""
  m_MxM = m_MxM.astype(jnp.float32)
  r = _excess(jnp.linalg.norm(m_MxM, axis=1), num_std)
  c = _excess(jnp.linalg.norm(m_MxM, axis=0), num_std)
  total = r + c
  return jnp.where(total > 0, (r - c) / jnp.where(total > 0, total, 1.0), 0.0)


def qk_matrices(w_q_MxHxD: jax.Array, w_k_MxHxD: jax.Array) -> jax.Array:
  """Per head, M_h = W_Q^h (W_K^h)^T: [H, d_model, d_model]. With fewer key
  heads than query heads (grouped-query attention), query head h uses key
  head h // (H_q / H_k)."""
  h_q, h_k = w_q_MxHxD.shape[1], w_k_MxHxD.shape[1]
  if h_q != h_k:
    w_k_MxHxD = jnp.repeat(w_k_MxHxD, h_q // h_k, axis=1)
  return jnp.einsum("mhd,nhd->hmn", w_q_MxHxD.astype(jnp.float32),
                    w_k_MxHxD.astype(jnp.float32))


def qk_structure_scores(w_q_MxHxD: jax.Array, w_k_MxHxD: jax.Array,
                        site: str) -> dict[str, jax.Array]:
  """Symmetry and directionality of each head's M_h
  (``symmetry/<site>/H<h>``) and of the layer's sum over heads, the matrix
  Saponati et al. score (``symmetry/<site>``; same for ``directionality``)."""
  m_HxMxM = qk_matrices(w_q_MxHxD, w_k_MxHxD)
  out = {f"symmetry/{site}": symmetry_score(jnp.sum(m_HxMxM, 0)),
         f"directionality/{site}": directionality_score(jnp.sum(m_HxMxM, 0))}
  for h in range(m_HxMxM.shape[0]):
    out[f"symmetry/{site}/H{h}"] = symmetry_score(m_HxMxM[h])
    out[f"directionality/{site}/H{h}"] = directionality_score(m_HxMxM[h])
  return out


def qk_structure(m) -> dict[str, jax.Array]:
  """``qk_structure_scores`` of every attention site of the model (a metric
  group, logged by every study). Tied W_K = W_Q gives symmetry 1; with
  QK-norm the scores describe the bilinear form before the normalization."""
  out = {}
  for site, attn in attention_modules(m.model).items():
    out.update(qk_structure_scores(attn.matrix("query"), attn.matrix("key"), site))
  return out


def qk_update_structure(m) -> dict[str, jax.Array]:
  """Symmetry and directionality of what training added to each layer's M,
  sum_h (W_Q W_K^T - W_Q0 W_K0^T) (``symmetry_update/<site>``...): the
  paper's argument is about the updates, and early in training M is still
  mostly its random initialization."""
  now, init = attention_modules(m.model), attention_modules(
      nnx.merge(m.trainer.graphdef, m.init_params, m.model_rest))
  out = {}
  for site, attn in now.items():
    m_HxMxM = (qk_matrices(attn.matrix("query"), attn.matrix("key"))
               - qk_matrices(init[site].matrix("query"), init[site].matrix("key")))
    out[f"symmetry_update/{site}"] = symmetry_score(jnp.sum(m_HxMxM, 0))
    out[f"directionality_update/{site}"] = directionality_score(jnp.sum(m_HxMxM, 0))
  return out

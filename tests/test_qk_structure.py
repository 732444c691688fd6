"""Symmetry and directionality of W_Q W_K^T against closed forms."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats as sp_stats

from qkvjax import metrics, models


def _gaussian(seed, d):
  return np.random.default_rng(seed).normal(size=(d, d)).astype(np.float32)


def test_symmetric_scores_one_antisymmetric_minus_one():
  a = _gaussian(0, 10)
  np.testing.assert_allclose(metrics.symmetry_score(a + a.T), 1.0, atol=1e-6)
  np.testing.assert_allclose(metrics.symmetry_score(a - a.T), -1.0, atol=1e-6)


def test_symmetry_of_a_mixture_follows_the_norms_of_its_parts():
  a = _gaussian(1, 12)
  s, n = a + a.T, a - a.T
  n = n * np.linalg.norm(s) / np.linalg.norm(n)  # equal norms
  for w in (0.0, 0.5, 1.0, 2.0):
    expected = (1 - w ** 2) / (1 + w ** 2)  # (|S|^2 - |wN|^2) / (|S|^2 + |wN|^2)
    np.testing.assert_allclose(metrics.symmetry_score(s + w * n), expected, atol=1e-5)


def test_symmetry_is_the_published_ratio_mapped_to_minus_one_one():
  a = _gaussian(2, 9)
  sym = (a + a.T) / 2
  ratio = np.sum(sym ** 2) / np.sum(a ** 2)
  np.testing.assert_allclose(metrics.symmetry_score(a), 2 * ratio - 1, atol=1e-6)


def test_gaussian_symmetry_has_the_exact_beta_distribution():
  # For i.i.d. N(0, 1) entries, |S|^2 ~ chi2(d(d+1)/2) and |N|^2 ~ chi2(d(d-1)/2)
  # independently, so (1 + s) / 2 ~ Beta(d(d+1)/4, d(d-1)/4): mean 1/d, std ~ sqrt(2)/d.
  d, n = 16, 600
  m_NxDxD = jax.random.normal(jax.random.PRNGKey(3), (n, d, d))
  s = np.asarray(jax.vmap(metrics.symmetry_score)(m_NxDxD))
  beta = sp_stats.beta(d * (d + 1) / 4, d * (d - 1) / 4)
  assert sp_stats.kstest((1 + s) / 2, beta.cdf).pvalue > 1e-3
  assert abs(s.mean() - (2 * beta.mean() - 1)) < 4 * 2 * beta.std() / np.sqrt(n)
  np.testing.assert_allclose(s.std(), 2 * beta.std(), rtol=0.15)
  assert abs(s.mean()) < 0.1  # "random Gaussian matrices score about 0"


def _directionality_reference(a, num_std=2.0):
  """Saponati et al.'s code (row/column excess over mean + 2 std), in numpy,
  with the sign of their tables."""
  rows, cols = np.linalg.norm(a, axis=1), np.linalg.norm(a, axis=0)
  rt = rows.mean() + num_std * rows.std(ddof=1)
  ct = cols.mean() + num_std * cols.std(ddof=1)
  r, c = np.sum(rows[rows > rt] - rt), np.sum(cols[cols > ct] - ct)
  return 0.0 if r + c == 0 else -(c - r) / (c + r)


def test_directionality_of_a_dominant_column_row_or_symmetric_matrix():
  a = _gaussian(4, 32) * 0.1
  col, row = a.copy(), a.copy()
  col[:, 3] += 5.0  # one key-side direction every query reads
  row[7, :] += 5.0
  np.testing.assert_allclose(metrics.directionality_score(col), -1.0, atol=1e-6)
  np.testing.assert_allclose(metrics.directionality_score(row), 1.0, atol=1e-6)
  np.testing.assert_allclose(metrics.directionality_score(row + row.T), 0.0, atol=1e-5)
  np.testing.assert_allclose(metrics.directionality_score(np.ones((8, 8))), 0.0)


def test_directionality_matches_the_reference_and_flips_under_transpose():
  for seed in range(6):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(24, 24)).astype(np.float32)
    a[:, rng.integers(24, size=2)] *= rng.uniform(1, 4)
    a[rng.integers(24, size=2), :] *= rng.uniform(1, 4)
    d = float(metrics.directionality_score(a))
    np.testing.assert_allclose(d, _directionality_reference(a), atol=1e-5)
    np.testing.assert_allclose(metrics.directionality_score(a.T), -d, atol=1e-5)


def test_gaussian_directionality_is_centred_on_zero():
  d_N = jax.vmap(metrics.directionality_score)(
      jax.random.normal(jax.random.PRNGKey(5), (400, 32, 32)))
  assert abs(float(jnp.mean(d_N))) < 4 * float(jnp.std(d_N)) / np.sqrt(400)
  assert float(jnp.std(d_N)) > 0.1  # not a constant


def test_layer_matrix_is_the_sum_of_head_matrices_and_gqa_repeats_keys():
  rng = np.random.default_rng(6)
  w_q, w_k = rng.normal(size=(2, 12, 4, 3)).astype(np.float32)
  m_HxMxM = metrics.qk_matrices(w_q, w_k)
  np.testing.assert_allclose(m_HxMxM[2], w_q[:, 2] @ w_k[:, 2].T, rtol=1e-5)
  np.testing.assert_allclose(m_HxMxM.sum(0), w_q.reshape(12, -1) @ w_k.reshape(12, -1).T,
                             rtol=1e-4, atol=1e-4)
  got = metrics.qk_matrices(w_q, w_k[:, :2])  # 2 key heads shared by 4 query heads
  np.testing.assert_allclose(got[1], w_q[:, 1] @ w_k[:, 0].T, rtol=1e-5)
  np.testing.assert_allclose(got[3], w_q[:, 3] @ w_k[:, 1].T, rtol=1e-5)
  scores = metrics.qk_structure_scores(w_q, w_k, "L3")
  assert sorted(scores) == sorted(
      [f"{k}/L3" for k in ("symmetry", "directionality")] +
      [f"{k}/L3/H{h}" for k in ("symmetry", "directionality") for h in range(4)])
  np.testing.assert_allclose(scores["symmetry/L3/H2"], metrics.symmetry_score(m_HxMxM[2]))


@pytest.mark.parametrize("tie,expected", [("qk", 1.0), ("none", None)])
def test_metric_group_on_a_model(tiny, tie, expected):
  cfg = tiny(**{"model.tie": tie})
  model = models.Transformer(cfg.model, 11, 5, rngs=nnx.Rngs(params=jax.random.PRNGKey(0)))
  out = metrics.qk_structure(types.SimpleNamespace(model=model))
  assert len(out) == 2 * cfg.model.n_layers * (cfg.model.n_heads + 1)
  if expected is not None:  # W_K = W_Q: M = W_Q W_Q^T is symmetric
    for k, v in out.items():
      np.testing.assert_allclose(v, expected if k.startswith("symmetry") else 0.0, atol=1e-5)
  else:
    assert abs(float(out["symmetry/L1/H0"])) < 0.5  # independent draws: near 0


@pytest.mark.parametrize("exp", ("specialization", "tied", "symmetry"))
def test_every_study_logs_the_scores(tiny_run, exp):
  from qkvjax import results, study
  assert metrics.qk_structure in study.study_of(exp).logged_metrics()
  run = results.Run(tiny_run(exp))
  cond = next(iter(run.conditions))
  keys = run.keys(condition=cond, phase="train")
  for k in ("symmetry/L0", "symmetry/L0/H1", "directionality/L0", "directionality/L0/H0"):
    assert k in keys
  assert np.all(np.abs(run.final("symmetry/L0", condition=cond)) <= 1)


def test_update_structure_scores_what_training_added(tiny):
  cfg = tiny()
  model = models.Transformer(cfg.model, 11, 5, rngs=nnx.Rngs(params=jax.random.PRNGKey(1)))
  graphdef, init, rest = nnx.split(model, nnx.Param, ...)
  init = jax.tree.map(jnp.array, init)  # a copy: the model is edited below
  m = types.SimpleNamespace(model=model, init_params=init, model_rest=rest,
                            trainer=types.SimpleNamespace(graphdef=graphdef))
  zero = metrics.qk_update_structure(m)
  assert sorted(zero) == ["directionality_update/L0", "directionality_update/L1",
                          "symmetry_update/L0", "symmetry_update/L1"]
  assert all(float(v) == 0.0 for v in zero.values())  # nothing added yet
  # W_Q += 0.5 W_K adds 0.5 W_K W_K^T to M: symmetric, so score 1 and 0.
  for layer in model.layers:
    layer.attn.query[...] = layer.attn.query[...] + 0.5 * layer.attn.key[...]
  got = metrics.qk_update_structure(types.SimpleNamespace(**{**vars(m), "model": model}))
  np.testing.assert_allclose(got["symmetry_update/L1"], 1.0, atol=1e-5)
  np.testing.assert_allclose(got["directionality_update/L0"], 0.0, atol=1e-5)
  assert float(metrics.qk_structure(m)["symmetry/L1"]) < 0.9  # M itself is not

"""Metric functions against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from qkvjax import metrics


def test_cka_is_one_for_itself_and_invariant_to_rotation_and_scale():
  x = jax.random.normal(jax.random.PRNGKey(0), (50, 6))
  q, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(1), (6, 6)))
  np.testing.assert_allclose(metrics.linear_cka(x, x), 1.0, rtol=1e-5)
  np.testing.assert_allclose(metrics.linear_cka(x, 3.0 * x @ q), 1.0, rtol=1e-5)
  y = jax.random.normal(jax.random.PRNGKey(2), (50, 6))
  assert metrics.linear_cka(x, y) < 0.5


def test_cka_matches_a_numpy_hsic_formula():
  x = np.random.default_rng(0).normal(size=(30, 4))
  y = np.random.default_rng(1).normal(size=(30, 3)) + x[:, :3]
  h = np.eye(30) - 1 / 30
  k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
  expected = np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))
  np.testing.assert_allclose(metrics.linear_cka(x, y), expected, rtol=1e-4)


def test_rsa_is_one_for_rescaled_copies():
  x = jax.random.normal(jax.random.PRNGKey(0), (20, 5))
  np.testing.assert_allclose(metrics.rsa(x, 2 * x), 1.0, rtol=1e-5)


def test_rsa_matches_pearson_on_the_upper_triangles():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(15, 4)), rng.normal(size=(15, 6))

  def cos(z):
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return z @ z.T

  iu = np.triu_indices(15, 1)
  expected = np.corrcoef(cos(x)[iu], cos(y)[iu])[0, 1]
  np.testing.assert_allclose(metrics.rsa(x, y), expected, rtol=1e-4)


def _state(tree):
  """An nnx.State of Params from a nested dict; 3-D leaves are attention
  matrices [M, H, D] (heads_axis 1)."""
  return nnx.State(jax.tree.map(
      lambda x: nnx.Param(jnp.asarray(x), **({"heads_axis": 1} if x.ndim == 3 else {})),
      tree))


def test_spectrum_metrics_singular_values_and_update_cosines():
  rng = np.random.default_rng(0)
  layer0 = {n: rng.normal(size=(6, 2, 3)) for n in ("query", "key", "value")}
  delta = rng.normal(size=(6, 2, 3))
  layer = {"query": layer0["query"] + delta, "key": layer0["key"] + 2 * delta,
           "value": layer0["value"] - delta}
  out = metrics.weights.spectrum_metrics(_state({"layers": {0: {"attn": layer}}}),
                                         _state({"layers": {0: {"attn": layer0}}}))
  sv = np.linalg.svd(np.asarray(layer["key"]).reshape(6, 6), compute_uv=False)
  np.testing.assert_allclose([out[f"sv/L0/key/{i:03d}"] for i in range(6)], sv, rtol=1e-4)
  np.testing.assert_allclose(out["update_cos/L0/query_key"], 1.0, rtol=1e-5)
  np.testing.assert_allclose(out["update_cos/L0/query_value"], -1.0, rtol=1e-5)
  p = sv / sv.sum()
  np.testing.assert_allclose(out["eff_rank/L0/key"], np.exp(-(p * np.log(p)).sum()), rtol=1e-4)


def test_matrices_are_found_from_paths_and_metadata():
  state = _state({"layers": {0: {"attn": {"query": np.ones((4, 2, 2))}, "mlp": {
      "kernel": np.ones((4, 3)), "bias": np.ones(3)}}}, "embed": np.ones((5, 4))})
  found = metrics.matrices(state)
  assert sorted(found) == ["L0/mlp/kernel", "L0/query", "embed"]
  assert found["L0/query"].heads_axis == 1 and found["embed"].heads_axis is None
  assert sorted(metrics.attention_matrices(state)) == ["L0/query"]


def test_effective_rank_closed_forms():
  np.testing.assert_allclose(metrics.effective_rank(jnp.ones(7)), 7.0, rtol=1e-5)
  np.testing.assert_allclose(metrics.effective_rank(jnp.array([1.0, 0, 0])), 1.0, rtol=1e-5)


def test_ov_copying_score_is_one_for_identity_and_minus_one_for_negation():
  eye = jnp.eye(5)
  np.testing.assert_allclose(metrics.ov_copying_score(eye, eye, eye, eye), 1.0, rtol=1e-5)
  np.testing.assert_allclose(metrics.ov_copying_score(eye, eye, -eye, eye), -1.0, rtol=1e-5)


def test_ov_copying_uses_the_full_circuit_eigenvalues():
  rng = np.random.default_rng(0)
  w_e, w_u = rng.normal(size=(9, 6)), rng.normal(size=(6, 9))
  w_v, w_o = rng.normal(size=(6, 3)), rng.normal(size=(3, 6))
  lam = np.linalg.eigvals(w_e @ w_v @ w_o @ w_u)  # the 9 x 9 circuit
  expected = lam.real.sum() / np.abs(lam).sum()
  got = metrics.ov_copying_score(*map(jnp.asarray, (w_e, w_v, w_o, w_u)))
  np.testing.assert_allclose(got, expected, rtol=1e-4)

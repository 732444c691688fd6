"""Metric functions against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np

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


def test_spectrum_metrics_singular_values_and_update_cosines():
  rng = np.random.default_rng(0)
  layer0 = {n: jnp.asarray(rng.normal(size=(6, 2, 3))) for n in ("query", "key", "value")}
  delta = jnp.asarray(rng.normal(size=(6, 2, 3)))
  layer = {"query": layer0["query"] + delta, "key": layer0["key"] + 2 * delta,
           "value": layer0["value"] - delta}
  out = metrics.spectrum_metrics({"layers": [layer]}, {"layers": [layer0]})
  sv = np.linalg.svd(np.asarray(layer["key"]).reshape(6, 6), compute_uv=False)
  np.testing.assert_allclose([out[f"sv/L0/key/{i:03d}"] for i in range(6)], sv, rtol=1e-4)
  np.testing.assert_allclose(out["update_cos/L0/query_key"], 1.0, rtol=1e-5)
  np.testing.assert_allclose(out["update_cos/L0/query_value"], -1.0, rtol=1e-5)
  p = sv / sv.sum()
  np.testing.assert_allclose(out["eff_rank/L0/key"], np.exp(-(p * np.log(p)).sum()), rtol=1e-4)


def test_effective_rank_closed_forms():
  np.testing.assert_allclose(metrics.effective_rank(jnp.ones(7)), 7.0, rtol=1e-5)
  np.testing.assert_allclose(metrics.effective_rank(jnp.array([1.0, 0, 0])), 1.0, rtol=1e-5)


def _ov_params(w_e, w_v, w_o, w_u):
  return {"embed": w_e, "unembed": w_u,
          "layers": [{"value": w_v[:, None, :], "out": w_o[None]}]}


def _ov_cfg():
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict({"tie": "none", "value_proj": True})


def test_ov_copying_score_is_one_for_identity_and_minus_one_for_negation():
  v, m = 5, 5
  eye = jnp.eye(m)
  ident = _ov_params(jnp.eye(v), eye, eye, jnp.eye(v))
  np.testing.assert_allclose(metrics.ov_copying_metrics(ident, _ov_cfg())["ov_copying/L0/H0"], 1.0,
                             rtol=1e-5)
  neg = _ov_params(jnp.eye(v), eye, -eye, jnp.eye(v))
  np.testing.assert_allclose(metrics.ov_copying_metrics(neg, _ov_cfg())["ov_copying/L0/H0"], -1.0,
                             rtol=1e-5)


def test_ov_copying_uses_the_full_circuit_eigenvalues():
  rng = np.random.default_rng(0)
  w_e, w_u = rng.normal(size=(9, 6)), rng.normal(size=(6, 9))
  w_v, w_o = rng.normal(size=(6, 3)), rng.normal(size=(3, 6))
  lam = np.linalg.eigvals(w_e @ w_v @ w_o @ w_u)  # the 9 x 9 circuit
  expected = lam.real.sum() / np.abs(lam).sum()
  got = metrics.ov_copying_metrics(_ov_params(*map(jnp.asarray, (w_e, w_v, w_o, w_u))),
                                   _ov_cfg())
  np.testing.assert_allclose(got["ov_copying/L0/H0"], expected, rtol=1e-4)

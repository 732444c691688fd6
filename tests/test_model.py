"""Model variants: tying, no value projection, QK-norm, residual scaling."""

import jax
import numpy as np
import pytest

from qkvjax import model as model_lib
from tests.conftest import tiny_config


def _forward(**model_overrides):
  cfg = tiny_config(**{f"model.{k}": v for k, v in model_overrides.items()})
  params = model_lib.init_params(jax.random.PRNGKey(0), cfg.model, 12, 5)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 5), 0, 12)
  logits, trace = jax.jit(lambda p, t: model_lib.forward(p, t, cfg.model))(params, tokens)
  return params, logits, trace


def test_tied_query_key_gives_a_symmetric_score_matrix():
  params, _, trace = _forward(tie="qk", causal=False)
  assert "key" not in params["layers"][0] and "value" in params["layers"][0]
  for lt in trace.layers:
    s = np.asarray(lt.attn_logits_BxHxTxT)
    np.testing.assert_allclose(s, np.swapaxes(s, -1, -2), rtol=1e-5, atol=1e-5)


def test_tie_qkv_shares_one_matrix():
  params, _, trace = _forward(tie="qkv")
  assert set(params["layers"][0]) >= {"query", "out"}
  assert not {"key", "value"} & set(params["layers"][0])
  lt = trace.layers[0]
  np.testing.assert_array_equal(lt.query_BxTxHxD, lt.value_BxTxHxD)


def test_no_value_projection_passes_the_layer_input():
  params, _, trace = _forward(value_proj=False)
  assert "value" not in params["layers"][0]
  lt = trace.layers[0]
  h = model_lib.layer_norm(lt.resid_in_BxTxM, params["layers"][0]["ln_attn"])
  np.testing.assert_allclose(lt.value_BxTxHxD, h.reshape(lt.value_BxTxHxD.shape), rtol=1e-6)


def test_qk_norm_normalizes_queries_and_keys():
  _, _, trace = _forward(qk_norm=True)
  q = np.asarray(trace.layers[0].query_BxTxHxD)
  np.testing.assert_allclose(q.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(q.var(-1), 1.0, rtol=1e-3)


def test_no_residual_and_residual_scale():
  _, with_res, _ = _forward()
  _, without, trace = _forward(residual=False)
  assert not np.allclose(with_res, without)
  _, scaled, _ = _forward(residual_scale=0.5)
  assert not np.allclose(with_res, scaled)


@pytest.mark.parametrize("causal", [True, False])
def test_causal_flag(causal):
  _, _, trace = _forward(causal=causal)
  w = np.asarray(trace.layers[0].attn_weights_BxHxTxT)
  upper = w[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]]
  assert np.all(upper == 0) == causal

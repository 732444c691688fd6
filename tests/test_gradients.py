"""Gradients reach W_Q only through Q.K; logged norms match an independent grad."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qkvjax import model as model_lib
from qkvjax import train
from tests.conftest import tiny_config


def _loss(params, batch, cfg):
  logits, _ = model_lib.forward(params, batch.tokens_BxT, cfg)
  return optax.softmax_cross_entropy_with_integer_labels(logits[:, -1], batch.target_B).mean()


def test_zero_key_matrix_gives_zero_query_gradient():
  """With W_K = 0 every score is 0 whatever W_Q is, so dL/dW_Q is exactly 0,
  while W_V (reached through the weighted sum) still gets a gradient."""
  cfg = tiny_config()
  trainer = train.make_trainer(cfg)
  params = model_lib.init_params(jax.random.PRNGKey(1), cfg.model,
                                 trainer.task.vocab_size, trainer.task.seq_len)
  for layer in params["layers"]:
    layer["key"] = jnp.zeros_like(layer["key"])
  batch = trainer.task.sample(jax.random.PRNGKey(2), 16)
  grads = jax.grad(_loss)(params, batch, cfg.model)
  for layer in grads["layers"]:
    assert np.all(np.asarray(layer["query"]) == 0.0)
    assert np.linalg.norm(layer["value"]) > 1e-4
    assert np.linalg.norm(layer["key"]) > 1e-6  # K still gets one: dS/dK = Q


def test_logged_gradient_norms_match_independent_grad():
  cfg = tiny_config(num_seeds=2)
  trainer = train.make_trainer(cfg)
  state = trainer.init_states()
  logged = jax.device_get(trainer.measure(state))
  for seed in range(2):
    one = jax.tree.map(lambda x: x[seed], state)
    batch = trainer.task.sample(jax.random.fold_in(one.data_key, one.step), cfg.batch_size)
    grads = jax.grad(_loss)(one.params, batch, cfg.model)
    for l, layer in enumerate(grads["layers"]):
      for name in ("query", "key", "value", "out"):
        expected = np.sqrt(np.sum(np.asarray(layer[name], np.float64) ** 2))
        np.testing.assert_allclose(logged[f"grad_norm/L{l}/{name}"][seed], expected, rtol=1e-4)
        heads = [np.linalg.norm(layer[name][h] if name == "out" else layer[name][:, h])
                 for h in range(cfg.model.n_heads)]
        np.testing.assert_allclose(np.sqrt(np.sum(np.square(heads))), expected, rtol=1e-4)
        for h in range(cfg.model.n_heads):
          np.testing.assert_allclose(logged[f"grad_norm/L{l}/H{h}/{name}"][seed], heads[h],
                                     rtol=1e-4)
    np.testing.assert_allclose(logged["grad_norm/embed"][seed],
                               np.linalg.norm(grads["embed"]), rtol=1e-4)


@pytest.mark.parametrize("init,variance", [
    ("lecun_normal", 1.0), ("normal", 1.0), ("orthogonal", 1.0),
    ("glorot_uniform", 2.0 / (1.0 + 64 / 64))])
def test_qkv_share_one_initializer(init, variance):
  """W_Q, W_K and W_V of every layer come from the chosen initializer: the
  same element variance (d_model * Var = the closed form), independent draws."""
  cfg = tiny_config()
  cfg.model.d_model, cfg.model.n_heads, cfg.model.d_head = 64, 4, 16
  cfg.model.qkv_init = init
  params = model_lib.init_params(jax.random.PRNGKey(0), cfg.model, 20, 4)
  for layer in params["layers"]:
    for name in ("query", "key", "value"):
      np.testing.assert_allclose(np.var(layer[name]) * 64, variance, rtol=0.1)
    for a, b in (("query", "key"), ("query", "value"), ("key", "value")):
      assert abs(np.corrcoef(np.ravel(layer[a]), np.ravel(layer[b]))[0, 1]) < 0.1
  if init == "orthogonal":
    w = np.asarray(params["layers"][0]["value"]).reshape(64, 64)
    np.testing.assert_allclose(w.T @ w, np.eye(64), atol=1e-4)

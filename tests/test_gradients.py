"""Gradients reach W_Q only through Q.K; logged norms match an independent
grad; W_Q, W_K, W_V share one initializer and its scale."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from qkvjax import metrics
from qkvjax import models
from qkvjax import tasks
from qkvjax import train
from tests.conftest import tiny_config


def _loss(model, batch):
  logits = model(batch.tokens_BxT)
  return optax.softmax_cross_entropy_with_integer_labels(logits[:, -1], batch.target_B).mean()


def test_zero_key_matrix_gives_zero_query_gradient():
  """With W_K = 0 every score is 0 whatever W_Q is, so dL/dW_Q is exactly 0,
  while W_V (reached through the weighted sum) still gets a gradient."""
  cfg = tiny_config()
  task = tasks.make("selection", cfg)
  model = models.Transformer(cfg.model, task.vocab_size, task.seq_len, rngs=nnx.Rngs(params=1))
  for layer in model.layers:
    layer.attn.key[...] = jnp.zeros_like(layer.attn.key[...])
  grads = nnx.grad(_loss)(model, task.sample(jax.random.PRNGKey(2), 16))
  for layer in grads["layers"].values():
    assert np.all(np.asarray(layer["attn"]["query"][...]) == 0.0)
    assert np.linalg.norm(layer["attn"]["value"][...]) > 1e-4
    assert np.linalg.norm(layer["attn"]["key"][...]) > 1e-6  # K still gets one: dS/dK = Q


def test_logged_gradient_norms_match_independent_grad():
  cfg = tiny_config(num_seeds=2)
  trainer = train.Trainer(cfg, tasks.make("selection", cfg), metrics=[metrics.weight_norms])
  state = trainer.init_states()
  logged = jax.device_get(trainer.measure_states(state))
  for seed in range(2):
    one = jax.tree.map(lambda x: x[seed], state)
    model = nnx.merge(trainer.graphdef, one.params, one.model_rest)
    batch = trainer.task.sample(jax.random.fold_in(one.data_key, one.step), cfg.batch_size)
    grads = nnx.to_pure_dict(nnx.grad(_loss)(model, batch))
    for l, layer in grads["layers"].items():
      for name in ("query", "key", "value", "out"):
        g = np.asarray(layer["attn"][name], np.float64)
        np.testing.assert_allclose(logged[f"grad_norm/L{l}/{name}"][seed],
                                   np.linalg.norm(g), rtol=1e-4)
        for h in range(cfg.model.n_heads):
          head = g[h] if name == "out" else g[:, h]
          np.testing.assert_allclose(logged[f"grad_norm/L{l}/H{h}/{name}"][seed],
                                     np.linalg.norm(head), rtol=1e-4)
      np.testing.assert_allclose(logged[f"grad_norm/L{l}/mlp_in/kernel"][seed],
                                 np.linalg.norm(layer["mlp_in"]["kernel"]), rtol=1e-4)
    np.testing.assert_allclose(logged["grad_norm/embed/embedding"][seed],
                               np.linalg.norm(grads["embed"]["embedding"]), rtol=1e-4)


@pytest.mark.parametrize("init,variance", [
    ("lecun_normal", 1.0), ("normal", 1.0), ("orthogonal", 1.0),
    ("glorot_uniform", 2.0 / (1.0 + 64 / 64))])
def test_qkv_share_one_initializer(init, variance):
  """W_Q, W_K and W_V of every layer come from the chosen initializer: the
  same element variance (d_model * Var = the closed form), independent draws."""
  cfg = tiny_config()
  cfg.model.d_model, cfg.model.n_heads, cfg.model.d_head = 64, 4, 16
  cfg.model.qkv_init = init
  model = models.Transformer(cfg.model, 20, 4, rngs=nnx.Rngs(params=0))
  for layer in model.layers:
    w = {n: np.asarray(getattr(layer.attn, n)[...]) for n in ("query", "key", "value")}
    for name in w:
      np.testing.assert_allclose(np.var(w[name]) * 64, variance, rtol=0.1)
    for a, b in (("query", "key"), ("query", "value"), ("key", "value")):
      assert abs(np.corrcoef(np.ravel(w[a]), np.ravel(w[b]))[0, 1]) < 0.1
  if init == "orthogonal":
    w = np.asarray(model.layers[0].attn.value[...]).reshape(64, 64)
    np.testing.assert_allclose(w.T @ w, np.eye(64), atol=1e-4)


@pytest.mark.parametrize("init,power", [("lecun_normal", 0.5), ("orthogonal", 1.0)])
def test_init_scale_multiplies_the_draw(init, power):
  """qkv_init_scale s multiplies the scale-1 draw by sqrt(s) (variance
  scaling) or s (orthogonal), whether s is a constant or a traced value."""
  cfg = tiny_config()
  cfg.model.qkv_init = init
  def query(scale):
    cfg.model.qkv_init_scale = scale
    return np.asarray(models.Transformer(cfg.model, 20, 4, rngs=nnx.Rngs(params=0))
                      .layers[0].attn.query[...])
  np.testing.assert_allclose(query(0.3), query(1.0) * 0.3**power, rtol=1e-6)

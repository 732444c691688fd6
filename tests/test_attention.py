"""Attention against jax.nn.dot_product_attention and a plain numpy reference."""

import jax
import numpy as np
import pytest

from qkvjax import attention


def numpy_attention(q, k, v, mask=None, scale=None):
  """Loops over batch and head; the textbook formula in float64."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  b, t, h, d = q.shape
  scale = 1 / np.sqrt(d) if scale is None else scale
  out = np.zeros_like(q)
  for bi in range(b):
    for hi in range(h):
      s = q[bi, :, hi] @ k[bi, :, hi].T * scale
      if mask is not None:
        s = np.where(mask, s, -np.inf)
      w = np.exp(s - s.max(-1, keepdims=True))
      w /= w.sum(-1, keepdims=True)
      out[bi, :, hi] = w @ v[bi, :, hi]
  return out


@pytest.fixture
def qkv():
  kq, kk, kv = jax.random.split(jax.random.PRNGKey(0), 3)
  shape = (2, 5, 3, 4)
  return (jax.random.normal(kq, shape), jax.random.normal(kk, shape),
          jax.random.normal(kv, shape))


@pytest.mark.parametrize("causal", [False, True])
def test_matches_jax_nn_and_numpy(qkv, causal):
  q, k, v = qkv
  mask = attention.causal_mask(5) if causal else None
  ours = attention.dot_product_attention(q, k, v, mask=mask).out_BxTxHxD
  ref = jax.nn.dot_product_attention(q, k, v, is_causal=causal)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ours, numpy_attention(q, k, v, mask=mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale,expected", [(None, 1.0), (0.37, 0.37)])
def test_scale_none_and_number(qkv, scale, expected):
  q, k, v = qkv
  att = attention.dot_product_attention(q, k, v, scale=scale)
  np.testing.assert_allclose(att.out_BxTxHxD, numpy_attention(q, k, v, scale=expected),
                             rtol=1e-5, atol=1e-5)
  ref = jax.nn.dot_product_attention(q, k, v, scale=expected)
  np.testing.assert_allclose(att.out_BxTxHxD, ref, rtol=1e-5, atol=1e-5)
  raw = np.einsum("bthd,bshd->bhts", q, k) * expected
  np.testing.assert_allclose(att.logits_BxHxTxS, raw, rtol=1e-5, atol=1e-5)


def test_weights_are_a_distribution_and_respect_the_mask(qkv):
  q, k, v = qkv
  att = attention.dot_product_attention(q, k, v, mask=attention.causal_mask(5))
  w = np.asarray(att.weights_BxHxTxS)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
  assert np.all(w[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] == 0)


def test_bad_scale_string_is_rejected(qkv):
  with pytest.raises(ValueError, match="scale='sqrt'"):
    attention.dot_product_attention(*qkv, scale="sqrt")

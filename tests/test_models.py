"""The NNX models: a numpy forward on the same weights, structural variants,
and the captured attention internals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qkvjax import models
from tests.conftest import tiny_config


def _model(**model_overrides):
  cfg = tiny_config(**{f"model.{k}": v for k, v in model_overrides.items()})
  return models.Transformer(cfg.model, 12, 5, rngs=nnx.Rngs(params=jax.random.PRNGKey(0)))


def _tokens():
  return jax.random.randint(jax.random.PRNGKey(1), (3, 5), 0, 12)


def _np_layer_norm(x, scale, bias, eps=1e-5):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def _np_gelu(x):  # the tanh approximation, jax.nn.gelu's default
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _np_forward(p, tokens, n_heads, causal=True):
  """The transformer written out in float64 numpy from a pure-dict state."""
  x = p["embed"]["embedding"][tokens] + p["pos_embed"][: tokens.shape[1]]
  t = tokens.shape[1]
  for i in sorted(p["layers"]):
    layer = p["layers"][i]
    h = _np_layer_norm(x, layer["ln_attn"]["scale"], layer["ln_attn"]["bias"])
    a = layer["attn"]
    q = np.einsum("btm,mhd->bthd", h, a["query"])
    k = np.einsum("btm,mhd->bthd", h, a["key"])
    v = np.einsum("btm,mhd->bthd", h, a["value"])
    s = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    if causal:
      s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = np.einsum("bhts,bshd->bthd", w, v)
    x = x + np.einsum("bthd,hdm->btm", out, a["out"])
    h = _np_layer_norm(x, layer["ln_mlp"]["scale"], layer["ln_mlp"]["bias"])
    h = _np_gelu(h @ layer["mlp_in"]["kernel"] + layer["mlp_in"]["bias"])
    x = x + h @ layer["mlp_out"]["kernel"] + layer["mlp_out"]["bias"]
  x = _np_layer_norm(x, p["ln_final"]["scale"], p["ln_final"]["bias"])
  return x @ p["unembed"]["kernel"]


@pytest.mark.parametrize("causal", [True, False])
def test_forward_equals_an_independent_numpy_forward(causal):
  model = _model(causal=causal)
  tokens = _tokens()
  pure = jax.tree.map(lambda x: np.asarray(x, np.float64), nnx.to_pure_dict(nnx.state(model)))
  expected = _np_forward(pure, np.asarray(tokens), n_heads=2, causal=causal)
  np.testing.assert_allclose(model(tokens), expected, rtol=2e-4, atol=2e-4)


def test_apply_captures_every_site_and_the_residual_stream():
  model = _model()
  logits, cap = models.apply(model, _tokens())
  assert logits.shape == (3, 5, 12)
  assert sorted(cap.attention) == ["L0", "L1"]
  assert cap.attention["L0"].weights_BxHxTxS.shape == (3, 2, 5, 5)
  assert [x.shape for x in cap.layer_values("resid_in")] == [(3, 5, 16)] * 2
  assert {"token_embed", "final_resid"} <= set(cap.values)
  np.testing.assert_allclose(cap.attention["L0"].weights_BxHxTxS.sum(-1), 1.0, rtol=1e-5)


def test_site_names_shorten_paths():
  assert models.site_name(("layers", 0, "attn", "query")) == "L0/query"
  assert models.site_name(("decoder", 1, "cross_attn", "key")) == "decoder/L1/cross_attn/key"
  assert models.site_name(("embed", "embedding")) == "embed/embedding"


def _params(model):
  return {models.site_name(p): v for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_tied_query_key_has_no_key_parameter_and_symmetric_scores():
  model = _model(tie="qk", causal=False)
  names = _params(model)
  assert "L0/key" not in names and "L0/value" in names
  _, cap = models.apply(model, _tokens())
  for tr in cap.attention.values():
    s = np.asarray(tr.logits_BxHxTxS)
    np.testing.assert_allclose(s, np.swapaxes(s, -1, -2), rtol=1e-5, atol=1e-5)


def test_tie_qkv_shares_one_matrix_and_keeps_the_untied_draw():
  tied, untied = _model(tie="qkv"), _model()
  names = _params(tied)
  assert "L0/query" in names and not {"L0/key", "L0/value"} & set(names)
  np.testing.assert_array_equal(tied.layers[0].attn.query[...], untied.layers[0].attn.query[...])
  np.testing.assert_array_equal(tied.layers[0].attn.out[...], untied.layers[0].attn.out[...])
  _, cap = models.apply(tied, _tokens())
  tr = cap.attention["L0"]
  np.testing.assert_array_equal(tr.query_BxTxHxD, tr.value_BxSxHxD)


def test_no_value_projection_passes_the_layer_input():
  model = _model(value_proj=False)
  assert "L0/value" not in _params(model)
  _, cap = models.apply(model, _tokens())
  tr = cap.attention["L0"]
  np.testing.assert_allclose(tr.value_BxSxHxD, tr.input_BxTxM.reshape(tr.value_BxSxHxD.shape),
                             rtol=1e-6)


def test_qk_norm_normalizes_queries_and_keys():
  _, cap = models.apply(_model(qk_norm=True), _tokens())
  q = np.asarray(cap.attention["L0"].query_BxTxHxD)
  np.testing.assert_allclose(q.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(q.var(-1), 1.0, rtol=1e-3)


def test_no_residual_and_residual_scale_change_the_output():
  tokens = _tokens()
  with_res = _model()(tokens)
  assert not np.allclose(with_res, _model(residual=False)(tokens))
  assert not np.allclose(with_res, _model(residual_scale=0.5)(tokens))


def test_attention_scale_override_makes_attention_uniform():
  _, cap = models.apply(_model(causal=False), _tokens(), attn_scale=0.0)
  np.testing.assert_allclose(cap.attention["L1"].weights_BxHxTxS, 1 / 5, rtol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_causal_flag(causal):
  _, cap = models.apply(_model(causal=causal), _tokens())
  w = np.asarray(cap.attention["L0"].weights_BxHxTxS)
  iu = np.triu_indices(5, 1)
  assert np.all(w[..., iu[0], iu[1]] == 0) == causal


def test_encoder_decoder_cross_attention_reads_the_encoder():
  cfg = tiny_config()
  cfg.model.enc_layers, cfg.model.dec_layers = 1, 2
  model = models.EncoderDecoder(cfg.model, 9, 7, 6, 4, rngs=nnx.Rngs(params=0))
  src = jnp.array([[3, 4, 5, 0, 0, 0]])
  tgt = jnp.array([[1, 2, 3, 4]])
  logits, cap = models.apply(model, src, tgt)
  assert logits.shape == (1, 4, 7)
  assert sorted(cap.attention) == ["decoder/L0/cross_attn", "decoder/L0/self_attn",
                                   "decoder/L1/cross_attn", "decoder/L1/self_attn",
                                   "encoder/L0/self_attn"]
  cross = cap.attention["decoder/L0/cross_attn"]
  assert cross.key_BxSxHxD.shape[1] == 6 and cross.query_BxTxHxD.shape[1] == 4
  np.testing.assert_array_equal(np.asarray(cross.weights_BxHxTxS)[..., 3:], 0.0)  # padding
  memory = model.encode(src)
  np.testing.assert_allclose(model.decode(tgt, memory, src), logits, rtol=1e-6)

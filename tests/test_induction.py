"""--exp=induction: the task's ground truth, the model options, and the
circuit metrics on a hand-built induction head (near 1) and random weights
(at the baseline); bad input through the command line."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from qkvjax import config as config_lib
from qkvjax import metrics
from qkvjax import models
from qkvjax.metrics import induction as ind
from qkvjax.tasks import induction as task_lib
from tests.conftest import ROOT


def _task(**kw):
  c = ml_collections.ConfigDict(dict(lowercase=True, vocab_size=12, seq_len=16, n_triggers=2,
                                     probe_len=6, fixed_triggers=False))
  c.update(kw)
  return task_lib.make_induction_task(c)


# ---- the task ---------------------------------------------------------------------------
@pytest.mark.parametrize("fixed", [True, False])
def test_triggers_are_always_followed_by_their_output_and_kinds_say_so(fixed):
  task = _task(vocab_size=20, seq_len=48, n_triggers=3, fixed_triggers=fixed)
  b = task.sample(jax.random.PRNGKey(0), 64)
  tok, tgt, kind = (np.asarray(x) for x in (b.tokens_BxT, b.target_BxT, b.kind_BxT))
  trig, outs = np.asarray(b.triggers_BxK), np.asarray(b.outputs_BxK)
  assert all(len(set(r)) == 3 for r in trig)
  assert (trig == [0, 1, 2]).all() == fixed      # fixed: the 3 most frequent characters
  for r in range(64):
    seen = set()
    for t in range(48):
      if tok[r, t] in trig[r]:
        assert tgt[r, t] == outs[r, list(trig[r]).index(tok[r, t])]
        assert kind[r, t] == (task_lib.REPEAT if tok[r, t] in seen else task_lib.FIRST)
        seen.add(tok[r, t])
      else:
        assert kind[r, t] == task_lib.BIGRAM
  assert (kind == task_lib.REPEAT).mean() > 0.05
  np.testing.assert_allclose(task.bigram.sum(1), 1, rtol=1e-6)


def test_bigram_positions_follow_the_text_statistics():
  task = _task(vocab_size=8, seq_len=64, n_triggers=1)
  b = task.sample(jax.random.PRNGKey(1), 512)
  tok, tgt, kind = (np.asarray(x).ravel() for x in (b.tokens_BxT, b.target_BxT, b.kind_BxT))
  keep = kind == task_lib.BIGRAM
  counts = np.zeros((8, 8))
  np.add.at(counts, (tok[keep], tgt[keep]), 1)
  freq = counts / counts.sum(1, keepdims=True)
  a = task.vocab.index(" ")
  np.testing.assert_allclose(freq[a], task.bigram[a], atol=0.03)


def test_repeated_probe_is_distinct_tokens_twice():
  task = _task()
  p = np.asarray(task.repeated(jax.random.PRNGKey(0), 5))
  assert p.shape == (5, 12)
  np.testing.assert_array_equal(p[:, :6], p[:, 6:])
  assert all(len(set(r[:6])) == 6 for r in p)


# ---- model options ---------------------------------------------------------------------
def _cfg(**kw):
  return config_lib.model_config(**{"mlp": False, "n_heads": 1, "frozen_embeddings": True,
                                    **kw})


def test_frozen_embeddings_are_not_parameters_and_positions_may_be_fixed():
  model = models.Transformer(_cfg(positions="sinusoidal"), 10, 8,
                             rngs=nnx.Rngs(params=jax.random.PRNGKey(0)))
  _, params, rest = nnx.split(model, nnx.Param, ...)
  names = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(params)}
  assert not any(n.startswith(("embed", "unembed", "pos_embed")) for n in names)
  assert {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(rest)} >= {
      "embed/embedding", "unembed/kernel", "pos_embed"}
  default = models.Transformer(config_lib.model_config(mlp=False, n_heads=1), 10, 8,
                               rngs=nnx.Rngs(params=jax.random.PRNGKey(0)))
  # Same keys drawn: the frozen weights are the default model's initial ones.
  np.testing.assert_array_equal(model.embedding_matrix, default.embedding_matrix)
  np.testing.assert_array_equal(model.layers[1].attn.query[...],
                                default.layers[1].attn.query[...])
  np.testing.assert_allclose(model.position_matrix[3, :2], [np.sin(3), np.cos(3)], rtol=1e-6)
  assert model(jnp.zeros((2, 8), jnp.int32)).shape == (2, 8, 10)


# ---- the hand-built induction head -----------------------------------------------------
def hand_built(task, attn_gain=4.0):
  """Elhage et al.'s / Bietti et al.'s recipe in one-hot coordinates:
  residual = [token (V) | position (T) | previous token (V)], each feature
  written +1 on its dimension and -1 on a mirror dimension (so every
  residual vector has mean 0 and LayerNorm only rescales it). Layer 1's QK
  matches position t with t - 1 and its OV writes the token into the
  previous-token block; layer 2's query reads the current token, its key the
  previous-token block, and its OV copies the attended token to the logits.
  Position 0 has no previous token: layer 1 attends to itself there, so a
  layer-2 query of the first token also matches position 0 (the probe's first
  repeated position splits its attention between positions 0 and 1)."""
  v, t = task.vocab_size, task.seq_len
  half = 2 * v + t
  m, d = 2 * half, max(v, t)
  model = models.Transformer(_cfg(d_model=m, d_head=d, n_layers=2, attn_scale="none"), v, t,
                             rngs=nnx.Rngs(params=jax.random.PRNGKey(0)))
  tok, pos, prev = np.arange(v), v + np.arange(t), v + t + np.arange(v)

  def write(rows, cols, shape, at_cols=True):
    w = np.zeros(shape)
    w[rows, cols] = 1
    w[rows, cols + half] = -1
    return w

  emb = write(np.arange(v), tok, (v, m))
  pe = write(np.arange(t), pos, (t, m))
  unemb = np.zeros((m, v)); unemb[tok, np.arange(v)] = 1
  z = lambda: np.zeros((m, 1, d))
  q1, k1, v1, q2, k2, v2 = z(), z(), z(), z(), z(), z()
  q1[pos, 0, np.arange(t)] = attn_gain
  k1[pos[:-1], 0, np.arange(1, t)] = 1          # key of s answers query s + 1
  v1[tok, 0, np.arange(v)] = 1
  o1 = write(np.arange(v), prev, (d, m))[None]
  q2[tok, 0, np.arange(v)] = attn_gain
  k2[prev, 0, np.arange(v)] = 1
  v2[tok, 0, np.arange(v)] = 1
  o2 = write(np.arange(v), tok, (d, m))[None]
  model.embed.embedding[...] = jnp.asarray(emb, jnp.float32)
  model.pos_embed[...] = jnp.asarray(pe, jnp.float32)
  model.unembed.kernel[...] = jnp.asarray(unemb, jnp.float32)
  for layer, (q, k, vv, o) in zip(model.layers, ((q1, k1, v1, o1), (q2, k2, v2, o2))):
    for name, w in (("query", q), ("key", k), ("value", vv), ("out", o)):
      getattr(layer.attn, name)[...] = jnp.asarray(w, jnp.float32)
  return model


def _scores(model, task):
  probe = task.repeated(jax.random.PRNGKey(3), 64)
  _, cap = models.apply(model, probe)
  prev = {s: np.asarray(ind.previous_token_score(tr.weights_BxHxTxS))
          for s, tr in cap.attention.items()}
  prefix = {s: np.asarray(ind.prefix_matching_score(tr.weights_BxHxTxS, task.probe_len))
            for s, tr in cap.attention.items()}
  batch = task.sample(jax.random.PRNGKey(4), 256)
  logits, _ = models.apply(model, batch.tokens_BxT)
  kinds = {k: float(v) for k, v in ind.position_kind_scores(logits, batch).items()}
  circ = {k: float(v) for k, v in ind.circuit_scores(model).items()}
  copy = {s: metrics.ov_copying.finish({s: np.asarray(x)[None]})
          for s, x in metrics.ov_copying.collect(type("M", (), {"model": model})).items()}
  return prev, prefix, kinds, circ, copy


def test_hand_built_induction_head_scores_near_one():
  task = _task(vocab_size=8, seq_len=24, n_triggers=2, probe_len=8)
  model = hand_built(task)
  prev, prefix, kinds, circ, copy = _scores(model, task)
  batch = task.sample(jax.random.PRNGKey(4), 256)
  hit = np.asarray(models.apply(model, batch.tokens_BxT)[0].argmax(-1) == batch.target_BxT)
  tok = np.asarray(batch.tokens_BxT)
  keep = (np.asarray(batch.kind_BxT) == task_lib.REPEAT) & (tok != tok[:, :1])
  repeat_not_first_token = hit[keep].mean()
  assert prev["L0"][0] > 0.95                 # layer 1: a previous-token head
  half = task.probe_len                       # layer 2: an induction head
  np.testing.assert_allclose(prefix["L1"][0], 1 - 0.5 / half, atol=0.01)
  assert prefix["L0"][0] < 0.2 and prev["L1"][0] < 0.3
  assert kinds["accuracy/repeat"] > 0.8       # it predicts repeated trigger outputs,
  assert repeat_not_first_token > 0.99        # all of them but the first token's
  assert kinds["accuracy/first"] < 0.3        # and cannot know first ones
  # Elhage et al.'s score is a ratio of Frobenius norms: a perfect
  # composition through the identity on 8 token directions (written +-1,
  # norm sqrt 2) scores 1 / sqrt(2 * 8) = 0.25, not 1; random matrices of the
  # same shapes score about 0.1.
  base = ind.composition_baseline(2 * (2 * 8 + 24), 24)
  np.testing.assert_allclose(circ["k_comp/L0H0/L1H0"], 0.25, rtol=1e-5)
  assert circ["k_comp/L0H0/L1H0"] > 2 * base
  assert circ["q_comp/L0H0/L1H0"] < 0.01 and circ["v_comp/L0H0/L1H0"] < 0.01
  assert circ["recall/previous_position"] == 1 and circ["recall/token"] == 1
  assert circ["recall/copy"] == 1
  np.testing.assert_allclose(copy["L1/H0"]["ov_copying/L1/H0"], 1, atol=1e-6)


def test_random_weights_score_at_the_baseline():
  task = _task(vocab_size=16, seq_len=24, n_triggers=2, probe_len=8)
  m, d = 64, 16
  model = models.Transformer(_cfg(d_model=m, d_head=d, n_layers=2), 16, 24,
                             rngs=nnx.Rngs(params=jax.random.PRNGKey(1)))
  prev, prefix, kinds, circ, copy = _scores(model, task)
  uniform = ind.uniform_attention_scores(task.probe_len)
  assert abs(prefix["L1"][0] - uniform["prefix_matching"]) < 0.05
  assert abs(prev["L0"][0] - uniform["previous_token"]) < 0.1
  assert kinds["accuracy/repeat"] < 0.3
  base = ind.composition_baseline(m, d)
  for kind in "qkv":
    assert abs(circ[f"{kind}_comp/L0H0/L1H0"] - base) < 0.5 * base
  assert abs(copy["L1/H0"]["ov_copying/L1/H0"][0] - ind.copying_baseline(16, m, d)) < 0.5


def test_composition_scores_against_closed_forms():
  eye = np.eye(4, dtype=np.float32)
  p = np.diag([1., 1., 0., 0.]).astype(np.float32)
  q = np.diag([0., 0., 1., 1.]).astype(np.float32)
  # An OV that writes into the subspace the later key reads: K = 1/sqrt(2)
  # (||P P|| / (||P|| ||P||)); orthogonal subspaces: 0.
  c = ind.composition(p, p, q)
  np.testing.assert_allclose([c["q"], c["k"], c["v"]], [2 ** -0.5, 2 ** -0.5, 0], atol=1e-6)
  c = ind.composition(eye, eye, eye)
  np.testing.assert_allclose(c["k"], 0.5, atol=1e-6)   # ||I|| / ||I||^2 = 1/2
  # Random Gaussian d x d: E score^2 = 1/d, so the baseline is near 1/sqrt(d).
  assert abs(ind.composition_baseline(64, 64) - 1 / 8) < 0.02
  np.testing.assert_allclose(metrics.copying_from_matrices(np.stack([eye, -eye])), [1, -1])


def test_curve_analysis_finds_the_drop_and_its_sharpness():
  steps = np.arange(0, 1001, 50)
  line = 3 - steps / 1000
  cliff = np.where(steps < 600, 3.0, 1.0)
  drop, sharp = ind.steepest_drop(steps, np.stack([line, cliff]), window=2, skip=100)
  np.testing.assert_allclose(sharp[0], 1, rtol=1e-6)
  assert 550 <= drop[1] <= 600 and sharp[1] == pytest.approx(2 / 100 / (2 / 900))
  rise = ind.rise_step(steps, np.stack([3 - line, 3 - cliff, np.ones_like(line)]), 0.5, 9999)
  np.testing.assert_array_equal(rise, [500, 600, 9999])


# ---- the study, end to end ---------------------------------------------------------------
def test_conditions_are_three_programs_and_the_paper_variant_is_valid(tmp_path):
  from configs import induction as cfg_mod  # pylint: disable=g-import-not-at-top
  from qkvjax import study
  from qkvjax.studies import induction as study_mod
  progs = study.programs(study_mod.STUDY, cfg_mod.get_config())
  assert sorted((p.config.model.n_layers, p.config.model.tie) for p in progs) == [
      (1, "none"), (2, "none"), (2, "qk")]
  study.check(study_mod.STUDY, cfg_mod.get_config("paper"), tmp_path)


def test_end_to_end_tiny(tiny_run):
  import json  # pylint: disable=g-import-not-at-top
  run_dir = tiny_run("induction")
  summary = json.loads((run_dir / "summary.json").read_text())
  assert len(summary["claims"]) == 15 and len(summary["drop_step"]) == 2
  final = summary["final"]["main"]
  for key in ("eval/loss/repeat", "prefix_matching/L1/H0", "k_comp/L0H0/L1H0",
              "ov_copying/L1/H0", "recall/token", "symmetry/L0"):
    assert key in final
  assert "k_comp/L0H0/L1H0" not in summary["final"]["one_layer"]
  for f in ("phase_change.png", "heads.png", "composition.png", "attention.png"):
    assert (run_dir / f).is_file()
  assert "## Beside the papers" in (run_dir / "report.md").read_text()
  _loaded_model_keeps_the_frozen_weights_the_run_used(run_dir)


def _loaded_model_keeps_the_frozen_weights_the_run_used(run_dir):
  """``load_run_model`` takes the non-parameter state (frozen embeddings and
  positions) from the checkpoint, not from a fresh initialization."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  import qkvjax  # pylint: disable=g-import-not-at-top
  from qkvjax import checkpoints  # pylint: disable=g-import-not-at-top
  path = checkpoints.directory(run_dir, ["main"])
  step = max(int(p.name) for p in path.iterdir() if p.name.isdigit())
  saved = ocp.StandardCheckpointer().restore(path / str(step) / "default")["model_rest"]
  for seed in (0, 1):
    model = qkvjax.load_run_model(run_dir, condition="main", seed=seed)
    np.testing.assert_array_equal(model.embed.embedding[...],
                                  saved["embed"]["embedding"][seed])
    np.testing.assert_array_equal(model.pos_embed[...], saved["pos_embed"][seed])


@pytest.mark.parametrize("bad", [
    "--config.task.n_triggers=76", "--config.task.seq_len=40", "--config.model.n_layers=1",
    "--config.model.positions=rotary", "--config.model.mlp=true", "--config.num_seeds=1",
    "--config.steps=30"])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, bad):
  from experiments import run as run_cli  # pylint: disable=g-import-not-at-top
  assert run_cli.main(["run", "--exp=induction", f"--results_dir={tmp_path}", bad]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and ("composition" if "n_layers" in bad
                                   else bad.split("=")[0][len("--config."):]) in err
  assert not (tmp_path / "induction").exists()


def test_bad_input_through_the_command_line(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-m", "experiments.run", "--exp=induction",
                        f"--results_dir={tmp_path}", "--config.task.vocab_size=12",
                        "--config.task.n_triggers=12"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and out.stderr.count("\n") == 1
  assert "task.n_triggers" in out.stderr and not (tmp_path / "induction").exists()

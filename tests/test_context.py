"""The context study: layer 1 cannot see context (exactly), the task's ground
truth and probe set, the metrics' closed forms, bad input, and an end-to-end
tiny run that redraws."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import run as run_cli
from qkvjax import registry
from qkvjax import metrics
from qkvjax import models
from qkvjax.studies import context as study
from qkvjax.tasks import context as context_task


def tiny_context_config(**model):
  c = registry.load_config("context")
  c.task.n_ambiguous, c.task.n_cues, c.task.n_neutral = 3, 4, 4
  c.task.seq_len, c.task.min_pos = 6, 2
  c.model.update(dict(d_model=16, n_heads=2, d_head=8, d_mlp=16, n_layers=2, **model))
  return c


@pytest.mark.parametrize("causal", [True, False])
def test_layer1_qkv_of_a_token_at_a_position_are_identical_in_every_context(causal):
  c = tiny_context_config(causal=causal)
  task = context_task.make_context_task(c.task)
  model = models.Transformer(c.model, task.vocab_size, task.seq_len, rngs=nnx.Rngs(params=0))
  # Arbitrary weights, LayerNorm gains and biases included.
  graphdef, params = nnx.split(model)
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: x + 0.3 * rng.normal(size=x.shape).astype(np.float32), params)
  n, pos = 32, 4
  batch = task.build(jax.random.PRNGKey(2), jnp.zeros(n, jnp.int32), jnp.full(n, pos, jnp.int32),
                     jnp.arange(n) % 2)  # fruit contexts and company contexts
  assert len({tuple(r) for r in np.asarray(batch.tokens_BxT)}) > n // 2  # many contexts
  _, cap = models.apply(nnx.merge(graphdef, params), batch.tokens_BxT)
  for l in range(2):
    tr = cap.attention[f"L{l}"]
    for name, x in zip("qkv", (tr.query_BxTxHxD, tr.key_BxSxHxD, tr.value_BxSxHxD)):
      at_pos = np.asarray(x[:, pos])
      same = all(np.array_equal(at_pos[0], row) for row in at_pos[1:])
      assert same == (l == 0), (l, name)  # exact in layer 1; context enters later


def test_ground_truth_matches_the_tables():
  task = context_task.make_context_task(tiny_context_config().task)
  tables = task.tables()
  assert tables["ambiguous"][0] == {"token": "apple", "id": 0,
                                    "senses": {"nature": "apple:fruit",
                                               "tech": "apple:company"}}
  cue_domain = {task.vocab.index(w): s for s, d in enumerate(context_task.DOMAINS)
                for w in tables["cues"][d]}
  neutral = {task.vocab.index(w) for w in tables["neutral"]}
  b = jax.device_get(task.sample(jax.random.PRNGKey(0), 512))
  for tok, tgt, pos, sense, word, cue in zip(*b):
    assert tok[pos] == task.ambiguous_ids[word]
    rest = np.delete(tok, pos)
    assert set(rest) <= set(cue_domain) | neutral  # one ambiguous word, no meanings
    assert [t in cue_domain for t in tok] == list(cue)
    assert {cue_domain[t] for t in rest if t in cue_domain} == {sense}
    assert any(cue[:pos])  # the sense is always readable before the word
    assert task.vocab[tgt] == tables["ambiguous"][word]["senses"][context_task.DOMAINS[sense]]
  assert set(b.target_pos_B) == set(task.positions)
  assert abs(b.sense_B.mean() - 0.5) < 0.1
  again = task.sample(jax.random.PRNGKey(0), 512)
  np.testing.assert_array_equal(b.tokens_BxT, again.tokens_BxT)
  assert not np.array_equal(b.tokens_BxT, task.sample(jax.random.PRNGKey(1), 512).tokens_BxT)


def test_probe_set_is_balanced_and_split_in_half_and_contrast_set_is_one_word():
  task = context_task.make_context_task(tiny_context_config().task)
  batch, fit = task.probe_set(jax.random.PRNGKey(0), replicates=4)
  cell = np.asarray(task.group(batch) * 2 + batch.sense_B)
  n_cells = 2 * task.n_ambiguous * len(task.positions)
  np.testing.assert_array_equal(np.bincount(cell, minlength=n_cells), 4)
  np.testing.assert_array_equal(np.bincount(cell[fit], minlength=n_cells), 2)
  contrast = task.contrast_set(jax.random.PRNGKey(1), 5)
  np.testing.assert_array_equal(contrast.sense_B, [0] * 5 + [1] * 5)
  assert set(np.asarray(contrast.tokens_BxT[:, -1])) == {task.ambiguous_ids[0]}


def test_metrics_closed_forms():
  task = context_task.make_context_task(tiny_context_config().task)
  batch, fit = task.probe_set(jax.random.PRNGKey(0), replicates=6)
  group, sense = np.asarray(task.group(batch)), np.asarray(batch.sense_B)
  rng = np.random.default_rng(0)
  offsets = rng.normal(size=(group.max() + 1, 32)) * 3  # more dimensions than groups
  # Identical vectors within a group: no spread, no sense, a probe at chance.
  same = jnp.asarray(offsets[group], jnp.float32)
  spread, share = task.context_variation(same, batch)
  assert float(spread) == 0.0 and float(share) == 0.0
  assert float(metrics.linear_probe_accuracy(same, batch.sense_B, fit, 0.01)) == 0.5
  # Pure sense: x = offset_g + c * (+-1) * u.
  u = rng.normal(size=32)
  x = offsets[group] + 0.5 * (2 * sense[:, None] - 1) * u
  spread, share = task.context_variation(jnp.asarray(x, jnp.float32), batch)
  expected = np.sqrt(2 * 0.25 * u @ u / np.mean(np.sum(x**2, -1)))
  np.testing.assert_allclose([spread, share], [expected, 1.0], rtol=1e-4)
  noisy = jnp.asarray(x + 0.05 * rng.normal(size=x.shape), jnp.float32)
  assert float(metrics.linear_probe_accuracy(noisy, batch.sense_B, fit, 0.01)) == 1.0


def test_ridge_probe_matches_a_direct_solve():
  """The probe's conjugate-gradient fit predicts what a direct solve predicts."""
  rng = np.random.default_rng(1)
  n, f, ridge = 200, 24, 0.01
  label = rng.integers(0, 2, n)
  x = rng.normal(size=(n, f)) * np.logspace(0, 1.5, f) + 1.0 * label[:, None] * rng.normal(size=f)
  fit = np.arange(n) % 2 == 0
  mu, sd = x[fit].mean(0), x[fit].std(0)
  z = (x - mu) / (sd + 1e-6 * sd.mean() + 1e-20)
  y = 2.0 * label - 1.0
  w = np.linalg.solve(z[fit].T @ z[fit] + ridge * fit.sum() * np.eye(f),
                      z[fit].T @ (y[fit] - y[fit].mean()))
  direct = np.mean(((z[~fit] @ w + y[fit].mean()) > 0) == (label[~fit] > 0))
  got = metrics.linear_probe_accuracy(jnp.asarray(x, jnp.float32), jnp.asarray(label), fit,
                                      ridge)
  assert 0.6 < direct and abs(float(got) - direct) <= 1 / (~fit).sum()  # one row at most


def test_end_to_end_tiny_run(tiny_run):
  run_dir = tiny_run("context")
  for name in ["config.json", "task.json", "metrics.jsonl", "summary.json", "report.md",
               "samples.json"] + [f"{f}.{e}" for f in (
                   "context_layers", "context_spread", "sense_share", "sense_probe",
                   "attention_cues", "loss_accuracy", "vectors_pca") for e in ("png",)]:
    assert (run_dir / name).stat().st_size > 0, name
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["num_seeds"] == 2 and summary["final_step"] == 4
  claims = {c["claim"]: c for c in summary["claims"]}
  assert len(claims) == 1 + 2 + 2 + 1
  for c in claims.values():
    assert c["verdict"] in ("supported", "negligible", "not supported", "inconclusive")
    assert c["effect"]["n"] == 2 and c["smallest_effect"] > 0
  layer1 = claims["layer 1: the ambiguous word's q, k, v differ between contexts"]
  assert layer1["per_seed"] == [0.0, 0.0] and layer1["verdict"] == "not supported"
  probe1 = claims["layer 1: the sense (fruit or company) is readable from q, k, v"]
  assert probe1["per_seed"] == [0.0, 0.0] and probe1["verdict"] == "not supported"
  rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert {r["condition"] for r in rows} == {"trained"}
  assert all(r[f"ctx_spread/L0/{n}"] == 0.0 for r in rows for n in study.REPS)
  assert all(r["probe_acc/L0/query"] == 0.5 for r in rows)
  assert "| claim |" in (run_dir / "report.md").read_text()


@pytest.mark.parametrize("arg,expected", [
    ("--config.model.n_layers=1", "config.model.n_layers=1 is out of range"),
    ("--config.probe.replicates=3", "an even integer >= 2"),
    ("--config.task.min_pos=8", "config.task.seq_len=8 is out of range"),
    ("--config.task.cue_prob=1.5", "0 <= value <= 1"),
    ("--config.task.n_neutral=0", "config.task.n_neutral=0 is out of range"),
    ("--config.probe.acc_margin=0.5", "0 < value < 0.5"),
])
def test_bad_config_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, arg, expected):
  results = tmp_path / "results"
  assert run_cli.main(["run", "--exp=context", f"--results_dir={results}", arg]) == 2
  err = capsys.readouterr().err
  assert expected in err and err.count("\n") == 1
  assert not results.exists()

"""`tied`: the match task's ground truth, the W_Q = W_K closed forms, claims on
a run with known values, bad input, and an end-to-end tiny run that writes
and redraws every file."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from qkvjax import config as config_lib
from qkvjax import registry
from qkvjax import models
from qkvjax import results
from qkvjax import study
from qkvjax.studies import tied
from qkvjax.tasks import relations
from tests.conftest import tiny_config


def test_match_task_targets_the_other_noun_of_the_probes_category():
  task = relations.make_match_task(tiny_config().task, seed=3)
  batch = task.sample(jax.random.PRNGKey(0), 64)
  again = task.sample(jax.random.PRNGKey(0), 64)
  np.testing.assert_array_equal(batch.tokens_BxT, again.tokens_BxT)  # pure in the key
  lang = task.language
  category = {int(n): c for c in range(lang.noun_ids.shape[0]) for n in lang.noun_ids[c]}
  colour = {int(lang.noun_ids[c, i]): int(lang.detail_ids[lang.noun_detail[c, i]])
            for c in range(lang.noun_ids.shape[0]) for i in range(lang.noun_ids.shape[1])}
  for tokens, target, pos in zip(np.asarray(batch.tokens_BxT), np.asarray(batch.target_B),
                                 np.asarray(batch.target_pos_B)):
    nouns, probe = tokens[:-1], tokens[-1]
    assert len({category[n] for n in nouns}) == len(nouns)
    assert category[nouns[pos]] == category[probe] and nouns[pos] != probe
    assert colour[nouns[pos]] == target
  assert task.seq_len == batch.tokens_BxT.shape[1] and task.vocab == lang.vocab
  # Colours are distinct within a category (3 nouns, 4 colours), so the probe
  # alone narrows the target to the other 2 nouns' colours: 1/2.
  assert task.tables()["probe_only_accuracy"] == pytest.approx(0.5)


def test_tied_scores_are_a_gram_matrix_so_a_token_outscores_equal_norm_keys():
  """W_K = W_Q makes each head's score matrix S = c Q Q^T: symmetric, positive
  semi-definite, and s_ii + s_jj >= 2 s_ij (so s_ii >= s_ij when s_ii = s_jj)."""
  cfg = tiny_config(**{"model.tie": "qk", "model.causal": False, "model.n_layers": 1})
  model = models.Transformer(cfg.model, 12, 5, rngs=nnx.Rngs(params=jax.random.PRNGKey(0)))
  assert not hasattr(model.layers[0].attn, "key")  # no W_K parameter to untie
  untied = models.Transformer(tiny_config(**{"model.n_layers": 1}).model, 12, 5,
                              rngs=nnx.Rngs(params=jax.random.PRNGKey(0)))
  np.testing.assert_array_equal(model.layers[0].attn.query[...],  # paired by seed
                                untied.layers[0].attn.query[...])
  _, captured = models.apply(model, jax.random.randint(jax.random.PRNGKey(1), (3, 5), 0, 12))
  s = np.asarray(captured.attention["L0"].logits_BxHxTxS, np.float64)
  np.testing.assert_allclose(s, np.swapaxes(s, -1, -2), atol=1e-5)
  assert np.linalg.eigvalsh(s).min() > -1e-4
  diag = np.diagonal(s, axis1=-2, axis2=-1)
  assert np.all(diag[..., :, None] + diag[..., None, :] >= 2 * s - 1e-4)


def _fake_run(tmp_path, per_condition, steps=500, log_every=10):
  """A saved run whose per-seed reach step, final accuracy and final
  self-attention are given per ``task/mode``."""
  cfg = registry.load_config("tied")
  cfg.conditions, cfg.steps, cfg.log_every = ("none", "qk"), steps, log_every
  cfg.num_seeds = len(next(iter(per_condition.values()))[0])
  run_dir = tmp_path / "tied" / "r1"
  run_dir.mkdir(parents=True)
  results.write_json(run_dir / "config.json", {
      "experiment": "tied", "config": cfg.to_dict(), "conditions": tied.conditions(cfg)})
  results.write_json(run_dir / "task.json", {"selection": {"verb_only_accuracy": 0.2},
                                             "match": {"probe_only_accuracy": 0.2}})
  rows = []
  for cond, (reach, final, own) in per_condition.items():
    for seed, (r, f, o) in enumerate(zip(reach, final, own)):
      for step in range(0, steps + 1, log_every):
        acc = f if step == steps else (0.95 if step >= r else 0.1)
        rows.append({"condition": cond, "phase": "train", "step": step, "seed": seed,
                     "loss": 1.0, "eval_accuracy": acc, "attn_self/L0/mean": o})
  (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  return results.Run(run_dir)


def test_claims_compare_conditions_seed_by_seed(tmp_path):
  n = 6
  none = ([100] * n, [1.0] * n, [0.2] * n)
  run = _fake_run(tmp_path, {
      "selection/none": none, "selection/qk": ([400, 420, 380, 400, 410, 390], [0.8] * n,
                                               [0.6] * n),
      "match/none": none, "match/qk": ([100, 110, 90, 100, 105, 95], [1.0] * n, [0.5] * n)})
  claims = {c.name: study.evaluate(c, run) for c in tied.claims(run)}
  slow = claims["W_K = W_Q learns the selection task more slowly"]
  assert slow["verdict"] == "supported" and abs(slow["effect"]["mean"] - 2.0) < 0.05
  assert claims["W_K = W_Q ends less accurate on the selection task"]["verdict"] == "supported"
  # Within the smallest effects of interest: a slow-down CI straddling 0, no cost.
  assert claims["W_K = W_Q learns the match task more slowly"]["verdict"] == "negligible"
  assert claims["W_K = W_Q ends less accurate on the match task"]["per_seed"] == [0.0] * n
  assert claims["W_K = W_Q costs less when the relation is symmetric"]["verdict"] == "supported"
  own = claims["W_K = W_Q makes the prediction position attend to itself (match)"]
  assert own["verdict"] == "supported" and abs(own["effect"]["mean"] - 0.3) < 1e-9
  learned = claims["prerequisite: separate W_Q, W_K, W_V learn the match task"]
  assert abs(learned["effect"]["mean"] - 0.8) < 1e-9


def test_steps_to_threshold_counts_never_reached_as_steps_plus_log_every(tmp_path):
  run = _fake_run(tmp_path, {c: ([100, 600], [1.0, 0.5], [0.2] * 2) for c in (
      "selection/none", "selection/qk", "match/none", "match/qk")})
  np.testing.assert_array_equal(tied.reach(run, "match/qk"), [100, 510])


@pytest.mark.parametrize("override,expected", [
    ({"conditions": ("none", "nope")}, "config.conditions=('none', 'nope') is out of range"),
    ({"tasks": ()}, "config.tasks=() is out of range"),
    ({"model.tie": "qk"}, "set per condition by this study"),
    ({"model.value_proj": False}, "set per condition by this study"),
    ({"model.d_head": 4}, "config.model.value_proj=False is out of range"),
    ({"task.nouns_per_category": 1}, "nouns_per_category=1 is out of range; accepted: an "
                                     "integer >= 2 (the match task)"),
    ({"threshold": 1.5}, "config.threshold=1.5 is out of range"),
    ({"acc_margin": -0.1}, "config.acc_margin=-0.1 is out of range"),
])
def test_bad_config_is_a_one_line_config_error(tmp_path, override, expected):
  cfg = config_lib.apply_overrides(registry.load_config("tied"), override)
  with pytest.raises(config_lib.ConfigError, match=expected.replace("(", r"\(").replace(
      ")", r"\)")) as err:
    study.check(tied.STUDY, cfg, tmp_path / "results")
  assert "\n" not in str(err.value) and not (tmp_path / "results").exists()


def test_end_to_end_tiny_run_writes_every_file(tiny_run):
  run_dir = tiny_run("tied")
  conditions = set(study.study_of("tied").conditions(registry.load_config("tied", "tiny")))
  figures = ("accuracy", "outcomes", "self_attention", "score_matrices", "attention_maps")
  for name in ["config.json", "task.json", "metrics.jsonl", "summary.json", "report.md",
               "samples.json"] + [f"{f}.png" for f in figures]:
    assert (run_dir / name).stat().st_size > 0, name
  rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert {r["condition"] for r in rows} == conditions >= {"match/none", "match/qk"}
  qk = [r for r in rows if r["condition"] == "match/qk"]
  assert max(r["score_asym/L0"] for r in qk) < 1e-5  # W_K = W_Q: symmetric scores
  assert min(r["score_asym/L0"] for r in rows if r["condition"] == "match/none") > 1e-2
  summary = json.loads((run_dir / "summary.json").read_text())
  names = [c["claim"] for c in summary["claims"]]
  assert any("more slowly" in n for n in names) and any("attend to itself" in n for n in names)
  for claim in summary["claims"]:
    assert claim["verdict"] in ("supported", "not supported", "inconclusive", "negligible")
    assert claim["effect"]["n"] <= 2 and len(claim["per_seed"]) == 2
  assert set(summary["steps_to_threshold"]) == conditions
  report = (run_dir / "report.md").read_text()
  assert "| claim |" in report and "| match/qk |" in report

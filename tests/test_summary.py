"""Summaries and claims from a saved run, including a diverged seed."""

import json

import numpy as np

from qkvjax import results
from qkvjax import study
from qkvjax.studies import specialization
from tests.conftest import tiny_config


def _write_run(tmp_path, num_seeds=3, diverge_seed=None):
  """A run directory of synthetic rows with every key the claims read."""
  cfg = tiny_config(num_seeds=num_seeds)
  rows = []
  rng = np.random.default_rng(0)
  for step in (0, 10):
    for seed in range(num_seeds):
      r = {"condition": "default", "phase": "train", "step": step, "seed": seed,
           "diverged": 0.0, "diverged_step": -1.0, "loss": 1.0 - 0.05 * step,
           "accuracy": 0.1 + 0.08 * step, "ablate_qk/accuracy": 0.2, "ablate_qk/loss": 1.5}
      for l in range(cfg.model.n_layers):
        for name in ("query", "key", "value"):
          sv = (np.array([1.5, 1.2, 0.9, 0.6]) + rng.normal(0, 0.01, 4)) * (
              1 + 0.02 * step * (name == "value"))
          for i, v in enumerate(sv):
            r[f"sv/L{l}/{name}/{i:03d}"] = float(v)
          r[f"grad_norm/L{l}/{name}"] = 2.0 if name == "value" else 1.0
          r[f"eff_rank/L{l}/{name}"] = 3.0
          r[f"cka_embed/L{l}/{name}"] = 0.8
        for pair in ("query_key", "query_value", "key_value"):
          r[f"update_cos/L{l}/{pair}"] = 0.1 if pair == "query_key" else 0.0
        for h in range(cfg.model.n_heads):
          r[f"attn_target/L{l}/H{h}"] = 0.25 + 0.03 * step * (h == 0)
      if diverge_seed == seed and step == 10:
        r = {k: (None if k not in ("condition", "phase", "step", "seed") else v)
             for k, v in r.items()}
        r.update(diverged=1.0, diverged_step=7.0)
      rows.append(r)
  results.write_json(tmp_path / "config.json", {
      "experiment": "specialization", "config": cfg.to_dict(), "status": "complete",
      "conditions": {"default": {}}})
  results.write_json(tmp_path / "task.json", {"selection": {"verb_only_accuracy": 0.125}})
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return results.Run(tmp_path)


def test_run_table_masks_a_diverged_seed(tmp_path):
  run = _write_run(tmp_path, diverge_seed=1)
  steps, values = run.table("loss")
  assert list(steps) == [0, 10]
  assert np.isfinite(values[0]).all() and np.isnan(values[1, 1]) and np.isfinite(values[1, 0])
  assert run.table("diverged")[1][1, 1] == 1.0
  assert run.diverged_seeds() == [{"seed": 1, "step": 7, "why": "non-finite"}]


def test_summary_lists_a_diverged_seed_and_excludes_it_from_every_claim(tmp_path):
  run = _write_run(tmp_path, num_seeds=4, diverge_seed=2)
  summary = study.summarize(specialization.STUDY, run)
  assert summary["diverged_seeds"] == {"default": [{"seed": 2, "step": 7, "why": "non-finite"}]}
  assert summary["final"]["default"]["loss"]["n"] == 3
  by_name = {c["claim"]: c for c in summary["claims"]}
  at_init = {"W_Q, W_K, W_V start statistically identical",
             "the gradient reaches V through the weighted sum, Q and K only through Q.K"}
  for claim in summary["claims"]:
    if claim["claim"] in at_init:  # step-0 values of a later-diverged seed are valid
      assert claim["per_seed"][2] is not None and claim["effect"]["n"] == 4
    else:
      assert claim["per_seed"][2] is None, claim["claim"]
      assert claim["effect"]["n"] == 3, claim["claim"]
  grad = by_name["the gradient reaches V through the weighted sum, Q and K only through Q.K"]
  np.testing.assert_allclose(grad["effect"]["mean"], np.log10(2.0))
  assert grad["verdict"] == "supported"
  learned = by_name["prerequisite: the task is learned"]
  np.testing.assert_allclose(learned["effect"]["mean"], 0.9 - 0.125)
  ablation = by_name["the task is solved through Q.K selection"]
  np.testing.assert_allclose(ablation["effect"]["mean"], 0.9 - 0.2)
  differentiate = by_name["W_Q, W_K, W_V differentiate during training"]
  assert differentiate["verdict"] in ("supported", "negligible")
  assert differentiate["smallest_effect"] == 0.03


def test_a_seed_whose_loss_blows_up_without_nan_is_excluded_as_unstable(tmp_path):
  run = _write_run(tmp_path, num_seeds=3)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  for r in rows:
    if r["seed"] == 0 and r["step"] == 10:
      r["loss"] = 1e12  # finite, far above 10x its initial loss
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  run = results.Run(tmp_path)
  assert run.diverged_seeds() == [{"seed": 0, "step": 10, "why": "unstable"}]
  assert np.isnan(run.final("accuracy")[0]) and np.isfinite(run.final("accuracy")[1:]).all()
  assert np.isfinite(run.initial("accuracy")).all()
  summary = study.summarize(specialization.STUDY, run)
  learned = next(c for c in summary["claims"] if c["claim"].startswith("prerequisite"))
  assert learned["per_seed"][0] is None and learned["effect"]["n"] == 2


def test_a_partial_last_logging_point_is_dropped_and_said(tmp_path):
  _write_run(tmp_path, num_seeds=3)
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines(keepends=True)
  (tmp_path / "metrics.jsonl").write_text("".join(lines[:-2]) + lines[-2][:40])  # torn
  run = results.Run(tmp_path)
  assert run.partial == [{"condition": "default", "phase": "train", "step": 10, "rows": 1,
                          "expected": 3}]
  steps, loss = run.table("loss")
  assert list(steps) == [0] and loss.shape == (3, 1)

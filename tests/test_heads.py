"""`heads`: the two-relation task's ground truth, head ablation as an exact
removal of one head's output, the separation index's closed forms, bad input,
and an end-to-end tiny run that writes and redraws every file."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import run as run_cli
from qkvjax import config as config_lib
from qkvjax import registry
from qkvjax import metrics
from qkvjax import models
from qkvjax import study
from qkvjax.metrics import heads as head_profiles
from qkvjax.studies import heads
from qkvjax.tasks import relations
from tests.conftest import tiny_config


def _task():
  cfg = tiny_config()
  cfg.task.n_adverbs, cfg.task.n_manners = 5, 3
  return relations.make_two_relation_task(cfg.task, seed=2)


def test_two_relation_task_ground_truth():
  task = _task()
  batch = task.sample(jax.random.PRNGKey(0), 64)
  again = task.sample(jax.random.PRNGKey(0), 64)
  np.testing.assert_array_equal(batch.tokens_BxT, again.tokens_BxT)  # pure in the key
  tables = task.tables()
  noun = {n["id"]: n for n in tables["nouns"]}
  verb = {v["id"]: v for v in tables["verbs"]}
  adverb = {a["id"]: a for a in tables["adverbs"]}
  vocab = task.vocab
  for tokens, colour, pos, manner, prev in zip(*map(np.asarray, batch)):
    assert prev == task.seq_len - 2 and tokens[prev] in adverb
    assert vocab[manner] == adverb[tokens[prev]]["manner"]
    assert noun[tokens[pos]]["category"] == verb[tokens[-1]]["selects"]
    assert vocab[colour] == noun[tokens[pos]]["detail"]
  assert len(task.vocab) == task.vocab_size == max(task.manner_ids) + 1
  # 5 adverbs over 3 manners, as evenly as possible: counts 2, 2, 1.
  assert sorted(np.bincount(task.adverb_manner)) == [1, 2, 2]
  assert tables["manner_majority_accuracy"] == pytest.approx(0.4)


def test_loss_sums_the_relations_each_over_its_own_answers():
  task = _task()
  batch = task.sample(jax.random.PRNGKey(0), 8)
  logits_BxTxV = jax.random.normal(jax.random.PRNGKey(1), (8, task.seq_len, task.vocab_size))
  loss, metrics = task.loss(logits_BxTxV, batch)
  assert float(loss) == pytest.approx(float(metrics["loss/select"] + metrics["loss/prev"]))
  # Raising a non-answer token changes neither relation's loss.
  other = np.setdiff1d(np.arange(task.vocab_size),
                       np.concatenate([task.output_ids("select"), task.output_ids("prev")]))
  bumped, _ = task.loss(logits_BxTxV.at[:, -1, other].add(5.0), batch)
  assert float(bumped) == pytest.approx(float(loss), rel=1e-6)


def test_ablating_a_head_removes_exactly_its_output():
  cfg = tiny_config(**{"model.n_layers": 1, "model.mlp": False})
  model = models.Transformer(cfg.model, 12, 5, rngs=nnx.Rngs(params=jax.random.PRNGKey(0)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 5), 0, 12)
  _, full = models.apply(model, tokens)
  ablated_params = metrics.ablate_head(params, "L0", 1)
  _, ablated = models.apply(nnx.merge(graphdef, ablated_params, rest), tokens)
  tr, w_o = full.attention["L0"], params["layers"][0]["attn"]["out"][...]
  head_out_BxTxM = jnp.einsum("bts,bsd,dm->btm", tr.weights_BxHxTxS[:, 1],
                              tr.value_BxSxHxD[:, :, 1], w_o[1])
  np.testing.assert_allclose(ablated.values["final_resid"],
                             full.values["final_resid"] - head_out_BxTxM, atol=1e-5)
  assert float(jnp.abs(w_o[1]).sum()) > 0  # params untouched
  assert float(jnp.abs(ablated_params["layers"][0]["attn"]["out"][...][0] - w_o[0]).sum()) == 0


def test_separation_index_closed_forms():
  disjoint = np.array([[[1.0, 0.0], [0.0, 2.0]]])     # each head serves one relation
  shared = np.array([[[1.0, 2.0], [1.0, 2.0]]])       # both heads serve both alike
  one_head = np.array([[[3.0, 0.5]]])
  np.testing.assert_allclose(head_profiles.separation(disjoint), [1.0])
  np.testing.assert_allclose(head_profiles.separation(shared), [0.0])
  np.testing.assert_allclose(head_profiles.separation(one_head), [0.0])
  np.testing.assert_allclose(head_profiles.separation(np.array([[[0.5, 0.0], [0.5, 1.0]]])), [0.5])
  assert np.isnan(head_profiles.separation(np.zeros((1, 2, 2))))[0]  # nothing to divide
  np.testing.assert_array_equal(head_profiles.distinct_top_heads(np.concatenate([disjoint, shared])),
                                [1.0, 0.0])
  np.testing.assert_allclose(head_profiles.participation(shared), [[2.0, 2.0]])
  assert head_profiles.head_roles(np.concatenate([disjoint, shared])) == [
      "1 select, 1 prev", "2 both"]


def test_conditions_follow_the_head_budget():
  cfg = registry.load_config("heads")
  assert heads.conditions(cfg)["4 heads"] == {"model.n_heads": 4, "model.d_head": 8}
  assert heads.conditions(cfg)["1 head"] == {"model.n_heads": 1, "model.d_head": 32}
  cfg.head_budget = "per_head"
  assert heads.conditions(cfg)["8 heads"] == {"model.n_heads": 8}


@pytest.mark.parametrize("override,expected", [
    ({"n_heads_list": (1, 0)}, "config.n_heads_list=(1, 0) is out of range"),
    ({"n_heads_list": (3,)}, "divisors of config.model.d_model=32"),
    ({"head_budget": "fixed"}, "config.head_budget='fixed' is out of range"),
    ({"model.n_heads": 4}, "set per condition by this study"),
    ({"separation_threshold": 1.0}, "config.separation_threshold=1.0 is out of range"),
    ({"task.n_manners": 0}, "config.task.n_manners=0 is out of range"),
    ({"eval_batch_size": 0}, "config.eval_batch_size=0 is out of range"),
])
def test_bad_config_is_a_one_line_config_error(tmp_path, override, expected):
  cfg = config_lib.apply_overrides(registry.load_config("heads"), override)
  with pytest.raises(config_lib.ConfigError, match=expected.replace("(", r"\(").replace(
      ")", r"\)")) as err:
    study.check(heads.STUDY, cfg, tmp_path / "results")
  assert "\n" not in str(err.value) and not (tmp_path / "results").exists()


def test_bad_head_list_on_the_command_line_exits_2(tmp_path, capsys):
  argv = ["run", "--exp=heads", f"--results_dir={tmp_path}", "--config.n_heads_list=1,x"]
  assert run_cli.main(argv) == 2
  assert "--config.n_heads_list='x' is not an integer" in capsys.readouterr().err
  assert not (tmp_path / "heads").exists()


def test_end_to_end_tiny_run_writes_every_file(tiny_run):
  run_dir = tiny_run("heads")
  n_heads = registry.load_config("heads", "tiny").n_heads_list
  figures = ("accuracy", "heatmap_attention", "heatmap_ablation", "separation")
  for name in ["config.json", "task.json", "metrics.jsonl", "summary.json", "report.md"] + [
      f"{f}.png" for f in figures]:
    assert (run_dir / name).stat().st_size > 0, name
  rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert {r["condition"] for r in rows} == {f"{n} head{'s' * (n > 1)}" for n in n_heads}
  two_heads = next(r for r in rows if r["condition"] == "2 heads")
  assert {"share/select/L0/H1", "share/prev/L0/H1", "ablation/select/L0/H1",
          "ablation/prev/L0/H1", "eval_accuracy/select", "eval_loss/prev"} <= set(two_heads)
  summary = json.loads((run_dir / "summary.json").read_text())
  two = summary["heads"]["2 heads"]
  assert two["d_head"] == 8  # n_heads * d_head = d_model
  assert np.asarray(two["share_SxKxR"]).shape == (2, 2, 2)
  for claim in summary["claims"]:
    assert claim["verdict"] in ("supported", "not supported", "inconclusive", "negligible")
    assert len(claim["per_seed"]) == 2
  assert "| claim |" in (run_dir / "report.md").read_text()

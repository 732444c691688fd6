"""--exp=residual: the signal-propagation measures against closed forms, the
Q/K gradients vanishing exactly when the tokens are identical, and a tiny
end-to-end run that redraws."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import run as run_cli
from qkvjax import bibliography
from qkvjax import registry
from qkvjax import metrics
from qkvjax import models
from qkvjax import stats
from qkvjax import study
from qkvjax import tasks
from qkvjax import train
from qkvjax.studies import residual
from tests.conftest import tiny_config


def test_rank_collapse_closed_forms():
  same = jnp.tile(jax.random.normal(jax.random.PRNGKey(0), (1, 1, 8)), (2, 5, 1))
  np.testing.assert_allclose(metrics.rank_collapse(same), 0.0, atol=1e-6)
  # Orthonormal tokens e_1..e_T: ||X - 1 xbar^T||^2 = T - 1, ||X||^2 = T.
  eye = jnp.eye(6)[None]
  np.testing.assert_allclose(metrics.rank_collapse(eye), np.sqrt(5 / 6), rtol=1e-6)
  # Invariant to scale, not to a shared offset (which aligns the tokens).
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 8))
  np.testing.assert_allclose(metrics.rank_collapse(3 * x), metrics.rank_collapse(x), rtol=1e-5)
  assert metrics.rank_collapse(x + 10.0) < metrics.rank_collapse(x)


def test_token_cosine_and_normalized_entropy_closed_forms():
  e = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 8))
  np.testing.assert_allclose(metrics.token_cosine(2 * e, e), 1.0, rtol=1e-6)
  np.testing.assert_allclose(metrics.token_cosine(-e, e), -1.0, rtol=1e-6)
  mask = metrics.visible_mask(4, 4, causal=True)
  uniform = jnp.where(mask, 1.0 / mask.sum(-1, keepdims=True), 0.0)[None, None]
  np.testing.assert_allclose(metrics.normalized_entropy(uniform, mask), 1.0, rtol=1e-6)
  one_hot = jnp.broadcast_to(jnp.eye(4), (1, 1, 4, 4))
  np.testing.assert_allclose(metrics.normalized_entropy(one_hot, mask), 0.0, atol=1e-6)


def _trainer_and_params(**overrides):
  cfg = tiny_config(**{"model.causal": False, "model.n_layers": 1, **overrides})
  trainer = train.Trainer(cfg, tasks.make("selection", cfg))
  state = jax.jit(trainer.init_state)(jax.random.PRNGKey(0), {})
  batch = trainer.task.sample(jax.random.PRNGKey(1), 8)
  return trainer, state.params, state.model_rest, batch


def test_identical_tokens_give_exactly_zero_query_and_key_gradients():
  """Noci et al.'s mechanism in its exact form: when every token carries the
  same vector, every score in a row is equal whatever W_Q and W_K are, so
  the loss does not depend on them (zero gradient) while W_V still gets one."""
  trainer, params, rest, batch = _trainer_and_params()
  pos = params["pos_embed"]
  pos[...] = jnp.zeros_like(pos[...])
  batch = batch._replace(tokens_BxT=jnp.broadcast_to(batch.tokens_BxT[:, :1],
                                                     batch.tokens_BxT.shape))
  norms = jax.jit(lambda p, b: metrics.matrix_grad_norms(types.SimpleNamespace(
      grads=jax.grad(trainer.loss_fn, has_aux=True)(p, rest, b)[0])))(params, batch)
  assert float(norms["grad_norm/L0/query"]) < 1e-6
  assert float(norms["grad_norm/L0/key"]) < 1e-6
  assert float(norms["grad_norm/L0/value"]) > 1e-3


def test_without_skips_uniform_attention_collapses_the_tokens_in_one_block():
  """With W_K = 0 attention is uniform, so without a skip every token leaves
  the block as the same mean vector: rank collapse is exactly 0, and the
  representation has lost its embedding."""
  trainer, params, rest, batch = _trainer_and_params(
      **{"model.mlp": False, "model.residual": False})
  key = params["layers"][0]["attn"]["key"]
  key[...] = jnp.zeros_like(key[...])

  @jax.jit
  def measured(p, tokens):
    captured = models.apply(nnx.merge(trainer.graphdef, p, rest), tokens)[1]
    return metrics.representation_metrics(types.SimpleNamespace(captured=captured))
  m = measured(params, batch.tokens_BxT)
  assert float(m["rank_collapse/X0"]) > 0.5
  np.testing.assert_allclose(m["rank_collapse/X1"], 0.0, atol=1e-5)


def test_conditions_fold_the_residual_scale_per_depth():
  cfg = registry.load_config("residual")
  cfg.depths = (4, 1)
  progs = study.programs(residual.STUDY, cfg)
  assert [p.conditions for p in progs] == [
      ["residual/depth1", "scaled_residual/depth1"], ["no_residual/depth1"],
      ["residual/depth4", "scaled_residual/depth4"], ["no_residual/depth4"]]
  assert [p["model.residual_scale"] for p in progs[2].points] == [1.0, 0.5]



def test_end_to_end_writes_every_file(tiny_run):
  run_dir = tiny_run("residual")
  names = ["config.json", "task.json", "metrics.jsonl", "summary.json", "report.md"]
  names += [f"{f}.{e}" for f in ("continuity", "rank_collapse", "grad_ratio",
                                 "grad_norms_vs_depth") for e in ("png",)]
  for name in names:
    assert (run_dir / name).stat().st_size > 0, name
  rows = {(r["condition"], r["seed"]): r
          for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
  assert sorted(rows) == sorted((residual.name(c, d), s) for c in residual.CONDITIONS
                                for d in (1, 2) for s in (0, 1))
  assert all(r["step"] == 0 and r["phase"] == "train" for r in rows.values())
  assert all(f"embed_cos/X{l}" in rows[("residual/depth2", 0)] for l in range(3))
  for s in (0, 1):
    # Same seed, same weights: at depth 1 the scaled residual equals the plain
    # one, and the separate no-skip program sees the same input stream.
    assert rows[("residual/depth1", s)]["embed_cos/X1"] == (
        rows[("scaled_residual/depth1", s)]["embed_cos/X1"])
    np.testing.assert_allclose(rows[("no_residual/depth2", s)]["embed_cka/X0"],
                               rows[("residual/depth2", s)]["embed_cka/X0"], rtol=1e-6)
  summary = json.loads((run_dir / "summary.json").read_text())
  assert len(summary["claims"]) == 6
  for claim in summary["claims"]:
    assert claim["verdict"] in stats.VERDICTS and claim["source"] in bibliography.SOURCES
    assert claim["effect"]["n"] == 2 and claim["quote"] and claim["smallest_effect"] > 0
  assert summary["final"]["no_residual/depth2"]["rank_collapse/X2"]["n"] == 2
  assert "## Claims" in (run_dir / "report.md").read_text()



@pytest.mark.parametrize("arg,expected", [
    ("--config.steps=5", "config.steps=5 is out of range; accepted: 0"),
    ("--config.depths=0,2", "config.depths=(0, 2) is out of range; accepted: distinct"),
    ("--config.depths=2,2", "repeats a value"),
    ("--config.depths=2,65", "config.depths=(2, 65) is out of range"),
    ("--config.conditions=residual,skip", "accepted: distinct names from residual"),
    ("--config.num_seeds=1", "config.num_seeds=1 is out of range"),
    ("--config.model.d_head=0", "config.model.d_head=0 is out of range"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, arg, expected):
  out = tmp_path / "r"
  assert run_cli.main(["run", "--exp=residual", f"--results_dir={out}", arg]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and expected in err, err
  assert not out.exists()


def test_default_config_is_valid(tmp_path):
  study.check(residual.STUDY, registry.load_config("residual"), tmp_path)

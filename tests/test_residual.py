"""--exp=residual: the signal-propagation measures against closed forms, the
Q/K gradients vanishing exactly when the tokens are identical, and a tiny
end-to-end run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import run as run_cli
from qkvjax import config as config_lib
from qkvjax import model as model_lib
from qkvjax import signal
from qkvjax import train
from qkvjax.studies import residual
from tests.conftest import tiny_config


def test_rank_collapse_closed_forms():
  same = jnp.tile(jax.random.normal(jax.random.PRNGKey(0), (1, 1, 8)), (2, 5, 1))
  np.testing.assert_allclose(signal.rank_collapse(same), 0.0, atol=1e-6)
  # Orthonormal tokens e_1..e_T: ||X - 1 xbar^T||^2 = T - 1, ||X||^2 = T.
  eye = jnp.eye(6)[None]
  np.testing.assert_allclose(signal.rank_collapse(eye), np.sqrt(5 / 6), rtol=1e-6)
  # Invariant to scale, not to a shared offset (which aligns the tokens).
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 8))
  np.testing.assert_allclose(signal.rank_collapse(3 * x), signal.rank_collapse(x), rtol=1e-5)
  assert signal.rank_collapse(x + 10.0) < signal.rank_collapse(x)


def test_token_cosine_and_normalized_entropy_closed_forms():
  e = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 8))
  np.testing.assert_allclose(signal.token_cosine(2 * e, e), 1.0, rtol=1e-6)
  np.testing.assert_allclose(signal.token_cosine(-e, e), -1.0, rtol=1e-6)
  mask = signal.visible_mask(4, causal=True)
  uniform = jnp.where(mask, 1.0 / mask.sum(-1, keepdims=True), 0.0)[None, None]
  np.testing.assert_allclose(signal.normalized_entropy(uniform, mask), 1.0, rtol=1e-6)
  one_hot = jnp.broadcast_to(jnp.eye(4), (1, 1, 4, 4))
  np.testing.assert_allclose(signal.normalized_entropy(one_hot, mask), 0.0, atol=1e-6)


def _init(trainer, cfg):
  return jax.jit(lambda key: model_lib.init_params(
      key, cfg.model, trainer.task.vocab_size, trainer.task.seq_len))(jax.random.PRNGKey(0))


def test_identical_tokens_give_exactly_zero_query_and_key_gradients():
  """Noci et al.'s mechanism in its exact form: when every token carries the
  same vector, every score in a row is equal whatever W_Q and W_K are, so
  the loss does not depend on them (zero gradient) while W_V still gets one."""
  cfg = tiny_config(**{"model.causal": False, "model.n_layers": 1})
  trainer = train.make_trainer(cfg)
  params = _init(trainer, cfg)
  params["pos_embed"] = jnp.zeros_like(params["pos_embed"])
  batch = trainer.task.sample(jax.random.PRNGKey(1), 8)
  batch = batch._replace(tokens_BxT=jnp.broadcast_to(batch.tokens_BxT[:, :1],
                                                     batch.tokens_BxT.shape))
  norms = jax.jit(lambda p, b: signal.grad_norm_metrics(
      jax.grad(trainer.loss_fn, has_aux=True)(p, b)[0]))(params, batch)
  assert float(norms["grad_norm/L0/query"]) < 1e-6
  assert float(norms["grad_norm/L0/key"]) < 1e-6
  assert float(norms["grad_norm/L0/value"]) > 1e-3


def test_without_skips_uniform_attention_collapses_the_tokens_in_one_block():
  """With W_K = 0 attention is uniform, so without a skip every token leaves
  the block as the same mean vector: rank collapse is exactly 0, and the
  representation has lost its embedding."""
  cfg = tiny_config(**{"model.causal": False, "model.n_layers": 1, "model.mlp": False,
                       "model.residual": False})
  trainer = train.make_trainer(cfg)
  params = _init(trainer, cfg)
  params["layers"][0]["key"] = jnp.zeros_like(params["layers"][0]["key"])
  batch = trainer.task.sample(jax.random.PRNGKey(1), 8)
  m = jax.jit(lambda p, t: signal.representation_metrics(
      model_lib.forward(p, t, cfg.model)[1]))(params, batch.tokens_BxT)
  assert float(m["rank_collapse/X0"]) > 0.5
  np.testing.assert_allclose(m["rank_collapse/X1"], 0.0, atol=1e-5)


TINY = ["--exp=residual", "--noprogress", "--config.num_seeds=2", "--config.batch_size=4",
        "--config.depths=1,2", "--config.model.d_model=16", "--config.model.n_heads=2",
        "--config.model.d_head=8", "--config.task.n_categories=4",
        "--config.task.nouns_per_category=2", "--config.task.n_details=3",
        "--config.task.n_slots=3"]


def test_end_to_end_writes_every_file(tmp_path):
  assert run_cli.main(["run", f"--results_dir={tmp_path}"] + TINY) == 0
  (run_dir,) = (tmp_path / "residual").iterdir()
  names = ["config.json", "task.json", "metrics.jsonl", "summary.json", "report.md"]
  names += [f"{f}.{e}" for f in ("continuity", "rank_collapse", "grad_ratio",
                                 "grad_norms_vs_depth") for e in ("png", "pdf")]
  for name in names:
    assert (run_dir / name).stat().st_size > 0, name
  rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert sorted({(r["condition"], r["depth"], r["seed"]) for r in rows}) == sorted(
      (c, d, s) for c in residual.CONDITIONS for d in (1, 2) for s in (0, 1))
  deep = [r for r in rows if r["depth"] == 2]
  assert all(f"embed_cos/X{l}" in deep[0] for l in range(3))
  # Same seed, same weights: at depth 1 the scaled residual equals the plain one.
  one = {(r["condition"], r["seed"]): r for r in rows if r["depth"] == 1}
  for s in (0, 1):
    assert one[("residual", s)]["embed_cos/X1"] == one[("scaled_residual", s)]["embed_cos/X1"]
  summary = json.loads((run_dir / "summary.json").read_text())
  assert len(summary["claims"]) == 6
  for claim in summary["claims"]:
    assert claim["verdict"] in ("supported", "not supported", "inconclusive")
    assert claim["effect"]["n"] == 2 and claim["quote"] and claim["source"]
  assert "## Claims" in (run_dir / "report.md").read_text()


@pytest.mark.parametrize("arg,expected", [
    ("--config.steps=5", "config.steps=5 is out of range; accepted: 0"),
    ("--config.depths=0,2", "config.depths='0,2' is out of range; accepted: distinct"),
    ("--config.depths=2,2", "config.depths='2,2' is out of range"),
    ("--config.conditions=residual,skip", "accepted: distinct comma-separated names from"),
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
  residual.check(config_lib.load_config("residual"), tmp_path)

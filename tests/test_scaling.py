"""--exp=scaling: the sqrt(d_k) closed form, the learning-rate sweep trick,
and a tiny end-to-end run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import run as run_cli
from qkvjax import attention
from qkvjax import config as config_lib
from qkvjax import model as model_lib
from qkvjax import signal
from qkvjax import train
from qkvjax.studies import scaling
from tests.conftest import tiny_config

D_KS = (8, 32, 128)


def test_unscaled_logit_variance_is_d_k_for_unit_variance_q_and_k():
  """Closed form: q, k with iid unit-variance entries give Var(q.k) = d_k."""
  stds = []
  for i, d in enumerate(D_KS):
    kq, kk = jax.random.split(jax.random.PRNGKey(i))
    q = jax.random.normal(kq, (64, 16, 1, d))
    k = jax.random.normal(kk, (64, 16, 1, d))
    att = attention.dot_product_attention(q, k, k, scale=None)
    std = float(signal.logit_std(att.logits_BxHxTxS, jnp.ones((16, 16), bool)))
    np.testing.assert_allclose(std**2 / d, 1.0, rtol=0.06)
    stds.append(std)
  np.testing.assert_allclose(signal.loglog_slope(D_KS, np.array([stds]))[0], 0.5, atol=0.02)


def test_unscaled_logit_variance_grows_linearly_in_d_k_in_the_model_at_init():
  """LayerNormed inputs times lecun_normal W_Q, W_K give unit-variance q and k
  entries, so the model's unscaled logits have variance d_k: std ~ sqrt(d_k)."""
  cfg = tiny_config(batch_size=16, **{"model.d_model": 64, "model.n_heads": 1})
  task = train.make_trainer(cfg).task
  tokens = task.sample(jax.random.PRNGKey(0), cfg.batch_size).tokens_BxT
  mask = signal.visible_mask(task.seq_len, cfg.model.causal)

  @jax.jit
  def variances(keys):  # one program for every d_k: [seeds, d_k]
    out = []
    for d in D_KS:
      m = scaling.variant_config(cfg, "unscaled", d).model
      def logit_var(key, m=m):
        params = model_lib.init_params(key, m, task.vocab_size, task.seq_len)
        logits = model_lib.forward(params, tokens, m)[1].layers[0].attn_logits_BxHxTxT
        return signal.logit_std(logits, mask) ** 2
      out.append(jax.vmap(logit_var)(keys))
    return jnp.stack(out, 1)

  var = np.asarray(variances(train.seed_keys(0, 32)))
  np.testing.assert_allclose(var.mean(0) / np.array(D_KS), 1.0, rtol=0.15)
  np.testing.assert_allclose(signal.loglog_slope(D_KS, np.sqrt(var)).mean(), 0.5, atol=0.05)


def test_lr_sweep_equals_training_at_each_rate_alone():
  small = {"model.n_layers": 1, "model.mlp": False}  # compiles faster
  cfg = tiny_config(num_seeds=2, **small)
  cfg.learning_rates = "0.001,0.03"
  sweep = train.make_trainer(scaling.variant_config(cfg, "scaled", 8),
                             trainer_class=scaling.LRSweepTrainer)
  swept = sweep.train_chunk(3)(sweep.init_states())
  alone = train.make_trainer(tiny_config(num_seeds=2, **small, **{"optim.learning_rate": 0.03}))
  state = alone.train_chunk(3)(alone.init_states())
  for ours, ref in zip(jax.tree.leaves(swept.params), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(ours[2:], ref, rtol=2e-5, atol=2e-6)  # rate 0.03's runs
    assert not np.allclose(ours[:2], ref)  # rate 0.001's runs differ


TINY = ["--exp=scaling", "--noprogress", "--config.num_seeds=2", "--config.init_seeds=5",
        "--config.steps=2", "--config.log_every=1", "--config.batch_size=4",
        "--config.d_heads=4,8", "--config.learning_rates=0.01,0.1",
        "--config.variants=scaled,unscaled",
        "--config.model.d_model=8", "--config.model.n_layers=1",
        "--config.task.n_categories=3",
        "--config.task.nouns_per_category=2", "--config.task.n_details=3",
        "--config.task.n_slots=2"]


def test_end_to_end_writes_every_file(tmp_path):
  assert run_cli.main(["run", f"--results_dir={tmp_path}"] + TINY) == 0
  (run_dir,) = (tmp_path / "scaling").iterdir()
  names = ["config.json", "task.json", "metrics.jsonl", "summary.json", "report.md"]
  names += [f"{f}.{e}" for f in ("init_vs_dhead", "init_grad_norms", "lr_sensitivity",
                                 "training_curves") for e in ("png", "pdf")]
  for name in names:
    assert (run_dir / name).stat().st_size > 0, name
  rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  init = [r for r in rows if r["phase"] == "init"]
  assert len(init) == 2 * 2 * 5  # d_heads x variants x init seeds
  trained = {(r["variant"], r["d_head"], r["learning_rate"], r["step"], r["seed"]): r
             for r in rows if r["phase"] == "train"}
  assert len(trained) == 2 * 2 * 2 * 3 * 2  # variants x d x rates x steps x seeds
  # Init seed i (measured in sweep-sized batches of 4: seeds 0-3, then 4) is
  # training seed i at step 0, at every learning rate.
  for r in init:
    assert sorted({q["seed"] for q in init if q["condition"] == r["condition"]}) == [0, 1, 2, 3, 4]
    for rate in (0.01, 0.1):
      if r["seed"] < 2:
        start = trained[(r["variant"], r["d_head"], rate, 0, r["seed"])]
        assert start["loss"] == r["loss"] and start["logit_std/L0"] == r["logit_std/L0"]
  summary = json.loads((run_dir / "summary.json").read_text())
  assert len(summary["claims"]) == 8  # the QK-norm comparison needs qk_norm
  for claim in summary["claims"]:
    assert claim["verdict"] in ("supported", "not supported", "inconclusive")
    assert claim["quote"] and claim["source"]
  assert set(summary["final"]) == {f"{v}/d{d}/lr{r:g}" for v in ("scaled", "unscaled")
                                   for d in (4, 8) for r in (0.01, 0.1)}
  assert "## Claims" in (run_dir / "report.md").read_text()
  # run() drew everything through finish(), from the saved files alone, which
  # is also what --exp=figures calls: no separate redraw here (it costs ~8 s).


@pytest.mark.parametrize("arg,expected", [
    ("--config.d_heads=8", "config.d_heads='8' is out of range; accepted: two or more"),
    ("--config.d_heads=8,x", "config.d_heads='8,x' is out of range"),
    ("--config.variants=scaled,nope", "accepted: distinct comma-separated names from scaled"),
    ("--config.learning_rates=0.1,0", "config.learning_rates='0.1,0' is out of range"),
    ("--config.learning_rates=0.1,nan", "config.learning_rates='0.1,nan' is out of range"),
    ("--config.init_seeds=1", "config.init_seeds=1 is out of range"),
    ("--config.optim.b1=1.5", "config.optim.b1=1.5 is out of range"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, arg, expected):
  out = tmp_path / "r"
  assert run_cli.main(["run", "--exp=scaling", f"--results_dir={out}", arg]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and expected in err, err
  assert not out.exists()


def test_default_config_is_valid(tmp_path):
  scaling.check(config_lib.load_config("scaling"), tmp_path)

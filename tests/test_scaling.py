"""--exp=scaling: the sqrt(d_k) closed form, the conditions folded into one
program per (d_head, QK-norm), and a tiny end-to-end run that redraws."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import run as run_cli
from qkvjax import attention
from qkvjax import bibliography
from qkvjax import config as config_lib
from qkvjax import registry
from qkvjax import metrics
from qkvjax import models
from qkvjax import stats
from qkvjax import study
from qkvjax import tasks
from qkvjax import train
from qkvjax.studies import scaling

D_KS = (8, 32, 128)


def small_config(**overrides):
  """The scaling config shrunk (a tiny task, batch 8, 2 seeds), then ``overrides``."""
  c = registry.load_config("scaling")
  c.num_seeds, c.init_seeds, c.steps, c.log_every, c.batch_size = 2, 4, 3, 3, 8
  c.task.n_categories, c.task.nouns_per_category, c.task.n_details = 4, 3, 4
  c.task.n_slots = 3
  c.model.d_model = 16
  return config_lib.apply_overrides(c, overrides)


def test_unscaled_logit_variance_is_d_k_for_unit_variance_q_and_k():
  """Closed form: q, k with iid unit-variance entries give Var(q.k) = d_k."""
  stds = []
  for i, d in enumerate(D_KS):
    kq, kk = jax.random.split(jax.random.PRNGKey(i))
    q = jax.random.normal(kq, (64, 16, 1, d))
    k = jax.random.normal(kk, (64, 16, 1, d))
    att = attention.dot_product_attention(q, k, k, scale=None)
    std = float(metrics.logit_std(att.logits_BxHxTxS, jnp.ones((16, 16), bool)))
    np.testing.assert_allclose(std**2 / d, 1.0, rtol=0.06)
    stds.append(std)
  np.testing.assert_allclose(stats.loglog_slope(D_KS, np.array([stds]))[0], 0.5, atol=0.02)


def test_unscaled_logit_variance_grows_linearly_in_d_k_in_the_model_at_init():
  """LayerNormed inputs times lecun_normal W_Q, W_K give unit-variance q and k
  entries, so the unscaled condition's logits have variance d_k: std ~ sqrt(d_k)."""
  cfg = small_config(d_heads=D_KS, variants=("unscaled",), learning_rates=(1e-3,),
                     batch_size=16, **{"model.d_model": 64, "model.n_layers": 1})
  task = tasks.make("selection", cfg)
  tokens = task.sample(jax.random.PRNGKey(0), cfg.batch_size).tokens_BxT
  mask = metrics.visible_mask(task.seq_len, task.seq_len, cfg.model.causal)
  model_cfgs = [c.model for _, c in study.condition_configs(scaling.STUDY, cfg).values()]
  assert [m.d_head for m in model_cfgs] == list(D_KS)
  assert {m.attn_scale for m in model_cfgs} == {"none"}

  @jax.jit
  def variances(keys):  # one program for every d_k: [seeds, d_k]
    def logit_var(key, m):
      model = models.Transformer(m, task.vocab_size, task.seq_len,
                                 rngs=nnx.Rngs(params=key))
      logits = models.apply(model, tokens)[1].attention["L0"].logits_BxHxTxS
      return metrics.logit_std(logits, mask) ** 2
    return jnp.stack([jax.vmap(lambda k, m=m: logit_var(k, m))(keys) for m in model_cfgs], 1)

  var = np.asarray(variances(train.seed_keys(0, 32)))
  np.testing.assert_allclose(var.mean(0) / np.array(D_KS), 1.0, rtol=0.15)
  np.testing.assert_allclose(stats.loglog_slope(D_KS, np.sqrt(var)).mean(), 0.5, atol=0.05)


def test_rates_and_attention_scales_fold_into_one_program_that_equals_each_alone():
  """Scaled and unscaled at every rate share one program per d_head; QK-norm
  (a different structure) gets its own. A folded run equals its condition
  trained alone; every condition starts from the same seed keys."""
  cfg = small_config(d_heads=(4, 8), learning_rates=(1e-3, 3e-2),
                     **{"model.n_layers": 1})
  progs = study.programs(scaling.STUDY, cfg)
  assert [p.conditions for p in progs] == [
      [scaling.name(v, d, r) for v in vs for r in (1e-3, 3e-2)]
      for d in (4, 8) for vs in (("scaled", "unscaled"), ("qk_norm",))]
  prog = progs[0]
  task = tasks.make("selection", prog.config)
  folded = train.Trainer(prog.config, task, prog.points)
  assert folded.folded == ["model.attn_scale", "optim.learning_rate"]
  together = folded.train_chunk(3)(folded.init_states())
  alone_cfg = study.condition_configs(scaling.STUDY, cfg)["unscaled/d4/lr0.03"][1]
  alone = train.Trainer(alone_cfg, task)
  state = alone.train_chunk(3)(alone.init_states())
  i = prog.conditions.index("unscaled/d4/lr0.03")
  for ours, ref in zip(jax.tree.leaves(together.params), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(ours[2 * i:2 * i + 2], ref, rtol=2e-5, atol=2e-6)
  # The same rate with scaling differs; at step 0 every condition had the same weights.
  q = together.params["layers"][0]["attn"]["query"][...]
  assert not np.allclose(q[2:4], q[2 * i:2 * i + 2])
  q0 = folded.init_states().params["layers"][0]["attn"]["query"][...]
  np.testing.assert_array_equal(q0[0:2], q0[2 * i:2 * i + 2])


def test_tiny_run_writes_every_file_and_init_seeds_are_training_seeds(tiny_run):
  run_dir = tiny_run("scaling")
  c = registry.load_config("scaling", "tiny")
  conditions = list(scaling.conditions(c))
  names = ["config.json", "task.json", "metrics.jsonl", "summary.json", "report.md"]
  names += [f"{f}.png" for f in ("init_vs_dhead", "init_grad_norms", "lr_sensitivity",
                                 "training_curves")]
  for name in names:
    assert (run_dir / name).stat().st_size > 0, name
  rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  init = {(r["condition"], r["seed"]): r for r in rows if r["phase"] == "init"}
  assert sorted(init) == sorted((k, s) for k in conditions for s in range(c.init_seeds))
  trained = {(r["condition"], r["step"], r["seed"]): r for r in rows if r["phase"] == "train"}
  assert sorted(trained) == sorted((k, t, s) for k in conditions
                                   for t in range(0, c.steps + 1, c.log_every)
                                   for s in range(c.num_seeds))
  # Init seed i (measured in batches of the program's runs) is training seed i at step 0.
  for (cond, seed), r in init.items():
    if seed < c.num_seeds:
      start = trained[(cond, 0, seed)]
      for key in ("loss", "logit_std/L0", "grad_norm/L0/query"):
        np.testing.assert_allclose(start[key], r[key], rtol=1e-6, err_msg=key)
  summary = json.loads((run_dir / "summary.json").read_text())
  claims = [claim["claim"] for claim in summary["claims"]]
  assert any("QK-norm bounds" in claim for claim in claims)  # the tiny variant has qk_norm
  for claim in summary["claims"]:
    assert claim["verdict"] in stats.VERDICTS and claim["source"] in bibliography.SOURCES
    assert claim["quote"] and claim["smallest_effect"] > 0
  assert set(summary["at_init"]) == set(conditions)
  assert summary["at_init"][scaling.name("scaled", 4, 0.01)]["logit_std/L0"]["n"] == \
      c.init_seeds
  assert set(summary["final"]) == set(conditions)
  report = (run_dir / "report.md").read_text()
  assert "## Claims" in report and "## At initialization" in report
  assert "## After training" in report


@pytest.mark.parametrize("arg,expected", [
    ("--config.d_heads=8", "config.d_heads=(8,) is out of range; accepted: two or more"),
    ("--config.d_heads=0,8", "config.d_heads=(0, 8) is out of range"),
    ("--config.d_heads=8,x", "--config.d_heads='x' is not an integer"),
    ("--config.d_heads=8,8", "repeats a value"),
    ("--config.variants=scaled,nope", "accepted: distinct names from scaled"),
    ("--config.learning_rates=0.1,0", "config.learning_rates=(0.1, 0.0) is out of range"),
    ("--config.learning_rates=0.1,nan", "is not a finite number"),
    ("--config.init_seeds=1", "config.init_seeds=1 is out of range"),
    ("--config.steps=0", "config.steps=0 is out of range"),
    ("--config.optim.b1=1.5", "config.optim.b1=1.5 is out of range"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, arg, expected):
  out = tmp_path / "r"
  assert run_cli.main(["run", "--exp=scaling", f"--results_dir={out}", arg]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and expected in err, err
  assert not out.exists()


def test_default_config_is_valid(tmp_path):
  study.check(scaling.STUDY, registry.load_config("scaling"), tmp_path)

"""Run-vmapped training: equals one seed at a time and separate programs, is
deterministic, and a diverging run is flagged without disturbing the others."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qkvjax import metrics
from qkvjax import tasks
from qkvjax import train
from tests.conftest import tiny_config


def _trainer(cfg, points=({},), metric_fns=(metrics.weight_norms,)):
  return train.Trainer(cfg, tasks.make("selection", cfg), points, metric_fns)


def _run_metrics(trainer):
  return [(step, m) for step, m, _ in train.train(trainer)]


def test_vmapped_training_equals_seeds_one_at_a_time():
  cfg = tiny_config(num_seeds=3, steps=4)
  trainer = _trainer(cfg)
  vmapped = trainer.train_chunk(4)(trainer.init_states())
  step = jax.jit(trainer.train_step)
  for seed, key in enumerate(train.seed_keys(cfg.seed, cfg.num_seeds)):
    state = jax.jit(trainer.init_state)(key, {})
    for _ in range(4):
      state = step(state)
    for ours, alone in zip(jax.tree.leaves(vmapped.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(ours[seed], alone, rtol=1e-5, atol=1e-6)


def test_folded_points_equal_separate_programs():
  """Two learning rates and two init scales folded into one program give the
  metrics each gets alone; every point starts from the same seed keys."""
  cfg = tiny_config(num_seeds=2, steps=4, log_every=2)
  points = [{"optim.learning_rate": 1e-3, "model.qkv_init_scale": 1.0},
            {"optim.learning_rate": 3e-2, "model.qkv_init_scale": 0.3}]
  folded = _trainer(cfg, points)
  assert folded.folded == ["model.qkv_init_scale", "optim.learning_rate"]
  together = _run_metrics(folded)
  for i, point in enumerate(points):
    alone_cfg = tiny_config(num_seeds=2, steps=4, log_every=2)
    alone_cfg.optim.learning_rate = point["optim.learning_rate"]
    alone_cfg.model.qkv_init_scale = point["model.qkv_init_scale"]
    alone = _run_metrics(_trainer(alone_cfg))
    for (s1, a), (s2, b) in zip(together, alone):
      assert s1 == s2
      part = folded.split_runs(a)[i]
      for k in b:
        np.testing.assert_allclose(part[k], b[k], rtol=2e-5, atol=1e-6, err_msg=k)


def test_seed_i_does_not_depend_on_num_seeds():
  np.testing.assert_array_equal(train.seed_keys(7, 2), train.seed_keys(7, 5)[:2])


def test_same_config_and_seed_give_identical_metrics():
  cfg = tiny_config()
  first, second = _run_metrics(_trainer(cfg)), _run_metrics(_trainer(cfg))
  assert [s for s, _ in first] == list(range(0, cfg.steps + 1, cfg.log_every))
  for (_, a), (_, b) in zip(first, second):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_diverging_run_is_flagged_and_the_others_finish():
  cfg = tiny_config(num_seeds=2, steps=3)
  trainer = _trainer(cfg)
  clean = trainer.train_chunk(3)(trainer.init_states())
  state = trainer.init_states()
  embed = state.params["embed"]["embedding"]
  embed[...] = embed[...].at[1, 0, 0].set(jnp.nan)  # seed 1's loss and gradients become NaN
  poisoned = np.asarray(embed[...][1])
  state = trainer.train_chunk(3)(state)
  assert bool(state.diverged[1]) and not bool(state.diverged[0])
  assert int(state.diverged_step[1]) == 0 and int(state.diverged_step[0]) == -1
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(clean.params)):
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)  # seed 0 untouched
  # Seed 1 is frozen at its last state rather than updated with NaNs.
  np.testing.assert_array_equal(np.asarray(state.params["embed"]["embedding"][...][1]),
                                poisoned)
  logged = jax.device_get(trainer.measure_states(state))
  np.testing.assert_array_equal(logged["diverged"], [0.0, 1.0])
  assert np.isfinite(logged["loss"][0])


def test_chunk_lengths_cover_all_steps():
  assert train.chunk_lengths(10, 4) == [4, 4, 2]
  assert train.chunk_lengths(8, 4) == [4, 4]
  assert train.chunk_lengths(3, 5) == [3]
  assert train.chunk_lengths(0, 5) == []


def test_measure_at_init_reuses_the_programs_for_many_seeds():
  cfg = tiny_config(num_seeds=2)
  points = [{"model.attn_scale": "inv_sqrt_dk"}, {"model.attn_scale": "none"}]
  trainer = _trainer(cfg, points, (metrics.attention_signal,))
  at_init = trainer.measure_at_init(5)
  assert at_init["loss"].shape == (2, 5)
  first = jax.device_get(trainer.measure_states(trainer.init_states()))
  np.testing.assert_allclose(at_init["loss"][:, :2].ravel(), first["loss"][:4], rtol=1e-6)
  # Unscaled logits are sqrt(d_head) = sqrt(8) times the scaled ones.
  ratio = at_init["logit_std/L0"][1] / at_init["logit_std/L0"][0]
  np.testing.assert_allclose(ratio, np.sqrt(8), rtol=1e-4)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_training_reduces_loss(optimizer):
  cfg = tiny_config(num_seeds=2, steps=60, log_every=60, batch_size=32)
  cfg.optim.optimizer = optimizer
  cfg.optim.learning_rate = 3e-3 if optimizer == "adamw" else 0.1
  logged = _run_metrics(_trainer(cfg))
  first, last = logged[0][1]["loss"], logged[-1][1]["loss"]
  assert np.all(last < first - 0.2), (first, last)


def test_warmup_scales_the_first_updates():
  cfg = tiny_config(num_seeds=1)
  cfg.optim.warmup_steps = 4
  opt = train.make_optimizer(cfg.optim)
  params = {"w": jnp.ones(3)}
  state = opt.init(params)
  grads = {"w": jnp.ones(3)}
  sizes = []
  for _ in range(6):
    updates, state = opt.update(grads, state, params)
    sizes.append(float(jnp.abs(updates["w"][0])))
  np.testing.assert_allclose(np.array(sizes[:4]) / sizes[4], [0, 0.25, 0.5, 0.75], atol=1e-4)
  assert sizes[5] == pytest.approx(sizes[4], rel=1e-4)

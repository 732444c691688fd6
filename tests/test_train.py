"""Seed-vmapped training: equals one seed at a time, is deterministic, and a
diverging seed is flagged without disturbing the others."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qkvjax import train
from tests.conftest import tiny_config


def _run_metrics(cfg):
  trainer = train.make_trainer(cfg)
  return [(step, m) for step, m, _ in train.train(trainer)]


def test_vmapped_training_equals_seeds_one_at_a_time():
  cfg = tiny_config(num_seeds=3, steps=4)
  trainer = train.make_trainer(cfg)
  vmapped = trainer.train_chunk(4)(trainer.init_states())
  step = jax.jit(trainer.train_step)
  for seed, key in enumerate(train.seed_keys(cfg.seed, cfg.num_seeds)):
    state = trainer.init_state(key)
    for _ in range(4):
      state = step(state)
    for ours, alone in zip(jax.tree.leaves(vmapped.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(ours[seed], alone, rtol=1e-5, atol=1e-6)


def test_seed_i_does_not_depend_on_num_seeds():
  keys2 = train.seed_keys(7, 2)
  keys5 = train.seed_keys(7, 5)
  np.testing.assert_array_equal(keys2, keys5[:2])


def test_same_config_and_seed_give_identical_metrics():
  cfg = tiny_config()
  first, second = _run_metrics(cfg), _run_metrics(cfg)
  assert [s for s, _ in first] == [0, 3, 6]
  for (_, a), (_, b) in zip(first, second):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_diverging_seed_is_flagged_and_the_others_finish():
  cfg = tiny_config(num_seeds=2, steps=3)
  trainer = train.make_trainer(cfg)
  state = trainer.init_states()
  clean = trainer.train_chunk(3)(trainer.init_states())
  # Poison seed 1's embedding: its loss and gradients become NaN.
  state = state._replace(params={**state.params,
                                 "embed": state.params["embed"].at[1, 0, 0].set(jnp.nan)})
  poisoned_embed = np.asarray(state.params["embed"][1])
  state = trainer.train_chunk(3)(state)
  assert bool(state.diverged[1]) and not bool(state.diverged[0])
  assert int(state.diverged_step[1]) == 0 and int(state.diverged_step[0]) == -1
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(clean.params)):
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)  # seed 0 untouched
  # Seed 1 is frozen at its last state rather than updated with NaNs.
  np.testing.assert_array_equal(np.asarray(state.params["embed"][1]), poisoned_embed)
  metrics = jax.device_get(trainer.measure(state))
  np.testing.assert_array_equal(metrics["diverged"], [0.0, 1.0])
  assert np.isfinite(metrics["loss"][0])


def test_chunk_lengths_cover_all_steps():
  assert train.chunk_lengths(10, 4) == [4, 4, 2]
  assert train.chunk_lengths(8, 4) == [4, 4]
  assert train.chunk_lengths(3, 5) == [3]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_training_reduces_loss(optimizer):
  cfg = tiny_config(num_seeds=2, steps=60, log_every=60, batch_size=32)
  cfg.optim.optimizer = optimizer
  cfg.optim.learning_rate = 3e-3 if optimizer == "adamw" else 0.1
  metrics = _run_metrics(cfg)
  first, last = metrics[0][1]["loss"], metrics[-1][1]["loss"]
  assert np.all(last < first - 0.2), (first, last)

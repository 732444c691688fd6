"""The selection task's ground truth, checked against its tables in numpy."""

import jax
import numpy as np

from qkvjax import tasks
from tests.conftest import tiny_config


def test_ground_truth_matches_the_tables():
  cfg = tiny_config()
  cfg.task.n_categories, cfg.task.nouns_per_category, cfg.task.n_slots = 6, 5, 4
  task = tasks.selection.make_selection_task(cfg.task, seed=3)
  batch = jax.device_get(task.sample(jax.random.PRNGKey(0), 512))
  tables = task.tables()
  by_id = {n["id"]: n for n in tables["nouns"]}
  verbs = {v["id"]: v for v in tables["verbs"]}
  for tokens, target, pos in zip(batch.tokens_BxT, batch.target_B, batch.target_pos_B):
    nouns = [by_id[int(t)] for t in tokens[:-1]]
    verb = verbs[int(tokens[-1])]
    cats = [n["category"] for n in nouns]
    assert len(set(cats)) == len(cats)  # distinct categories
    assert [i for i, c in enumerate(cats) if c == verb["selects"]] == [int(pos)]
    assert task.vocab[int(target)] == nouns[int(pos)]["detail"]


def test_every_slot_category_and_detail_occurs():
  cfg = tiny_config()
  task = tasks.selection.make_selection_task(cfg.task, seed=0)
  batch = jax.device_get(task.sample(jax.random.PRNGKey(1), 2000))
  counts = np.bincount(batch.target_pos_B, minlength=task.n_slots)
  assert np.all(counts > 2000 / task.n_slots * 0.8)  # target position ~uniform
  assert set(np.unique(batch.tokens_BxT[:, -1])) == set(task.verb_ids.ravel())


def test_sampling_is_a_pure_function_of_the_key():
  task = tasks.selection.make_selection_task(tiny_config().task, seed=0)
  a = task.sample(jax.random.PRNGKey(5), 16)
  b = task.sample(jax.random.PRNGKey(5), 16)
  c = task.sample(jax.random.PRNGKey(6), 16)
  np.testing.assert_array_equal(a.tokens_BxT, b.tokens_BxT)
  assert not np.array_equal(a.tokens_BxT, c.tokens_BxT)


def test_vocabulary_uses_the_articles_words():
  cfg = tiny_config()
  cfg.task.n_categories, cfg.task.nouns_per_category = 4, 10
  task = tasks.selection.make_selection_task(cfg.task, seed=0)
  tables = task.tables()
  apple = next(n for n in tables["nouns"] if n["token"] == "apple")
  assert apple["category"] == "edible"
  assert {"eat", "drive", "chase"} <= {v["token"] for v in tables["verbs"]}
  assert len(set(task.vocab)) == len(task.vocab) == 4 * 10 + 4 * 2 + cfg.task.n_details

"""The selection task: a generated language whose ground truth is known.

It mirrors the articles' examples ("eat -> apple",
"drive -> car", "chase -> laser dot"). Every noun has a *category* (edible,
vehicle, movable, animate, ...) and a *detail* (its colour). A verb selects a
category. A sequence is ``n_slots`` nouns of distinct categories followed by
one verb; the target, predicted at the verb's position, is the colour of the
one noun whose category the verb selects:

    bus  apple  cat  laser_dot  eat   ->  red      (apple is red)

The intended solution is the division of labour the articles describe: the
verb's query seeks its category, the selected noun's key advertises it, and
that noun's value carries its colour (the detail belongs to the noun's
identity, so it must come through V). It is not the only solution: with
distinct categories per sequence, diffuse attention that sums every noun's V
(one slot per category) plus an MLP keyed on the verb can also work, so the
metrics measure which route a model took instead of assuming it (attention
on the ground-truth noun; accuracy with Q.K selection ablated).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from qkvjax import config as config_lib
from qkvjax.tasks import base

_CATEGORY_WORDS = {
    "edible": (["apple", "bread", "banana", "cheese", "rice", "soup", "plum",
                "egg"], ["eat", "taste"]),
    "vehicle": (["car", "bus", "truck", "bike", "train", "boat", "tram",
                 "van"], ["drive", "ride"]),
    "movable": (["laser_dot", "ball", "frisbee", "stick", "yarn", "toy_mouse",
                 "kite", "leaf"], ["chase", "fetch"]),
    "animate": (["cat", "dog", "child", "horse", "bird", "fish", "goat",
                 "owl"], ["pet", "feed"]),
    "wearable": (["hat", "shoe", "scarf", "coat", "glove", "sock", "ring",
                  "belt"], ["wear", "fold"]),
    "readable": (["book", "letter", "map", "menu", "poem", "sign", "note",
                  "novel"], ["read", "write"]),
}
_DETAIL_WORDS = ["red", "green", "blue", "yellow", "white", "black", "orange",
                 "purple"]


class Batch(NamedTuple):
  tokens_BxT: jax.Array     # int32 token ids
  target_B: jax.Array       # detail token id to predict at the last position
  target_pos_B: jax.Array   # position of the selected noun (ground-truth key)


@dataclasses.dataclass(frozen=True)
class SelectionTask:
  """Vocabulary and feature tables of one generated language; the target is
  predicted at the last position (the verb)."""

  name = "selection"

  vocab: tuple[str, ...]
  categories: tuple[str, ...]
  noun_ids: np.ndarray        # [n_categories, nouns_per_category]
  verb_ids: np.ndarray        # [n_categories, verbs_per_category]
  detail_ids: np.ndarray      # [n_details]
  noun_detail: np.ndarray     # [n_categories, nouns_per_category] detail index
  n_slots: int

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def seq_len(self) -> int:
    return self.n_slots + 1

  @property
  def n_details(self) -> int:
    return len(self.detail_ids)

  def model_inputs(self, batch: Batch) -> tuple[jax.Array]:
    return (batch.tokens_BxT,)

  def loss(self, logits_BxTxV: jax.Array, batch: Batch):
    """Cross-entropy of the prediction at the last position."""
    return base.cross_entropy(logits_BxTxV[:, -1], batch.target_B)

  def verb_only_accuracy(self) -> float:
    """Best accuracy of a predictor that sees only the verb (its category):
    the most common detail within each category, averaged over categories.
    The bar a model that ignores the nouns cannot beat."""
    return float(np.mean([np.bincount(row).max() / len(row) for row in self.noun_detail]))

  def tables(self) -> dict:
    """The vocabulary and feature tables, as saved with a run's results."""
    n_cat, n_noun = self.noun_ids.shape
    return {
        "vocab": list(self.vocab),
        "nouns": [{"token": self.vocab[self.noun_ids[c, i]],
                   "id": int(self.noun_ids[c, i]),
                   "category": self.categories[c],
                   "detail": self.vocab[self.detail_ids[self.noun_detail[c, i]]]}
                  for c in range(n_cat) for i in range(n_noun)],
        "verbs": [{"token": self.vocab[v], "id": int(v),
                   "selects": self.categories[c]}
                  for c in range(n_cat) for v in self.verb_ids[c]],
        "details": [self.vocab[d] for d in self.detail_ids],
        "n_slots": self.n_slots,
        "verb_only_accuracy": self.verb_only_accuracy(),
        "sequence": "n_slots nouns of distinct categories, then a verb; "
                    "predict the detail of the noun the verb selects",
    }

  def sample(self, key: jax.Array, batch_size: int) -> Batch:
    """Draws a batch; a pure function of ``key``."""
    n_cat, n_noun = self.noun_ids.shape
    k_cat, k_noun, k_sel, k_verb = jax.random.split(key, 4)
    # Distinct categories per sequence: the first n_slots of a permutation.
    order = jnp.argsort(jax.random.uniform(k_cat, (batch_size, n_cat)), axis=1)
    cats_BxN = order[:, : self.n_slots]
    which_BxN = jax.random.randint(k_noun, cats_BxN.shape, 0, n_noun)
    nouns_BxN = jnp.asarray(self.noun_ids)[cats_BxN, which_BxN]
    sel_B = jax.random.randint(k_sel, (batch_size,), 0, self.n_slots)
    sel_cat_B = jnp.take_along_axis(cats_BxN, sel_B[:, None], 1)[:, 0]
    sel_noun_B = jnp.take_along_axis(which_BxN, sel_B[:, None], 1)[:, 0]
    verb_B = jnp.asarray(self.verb_ids)[
        sel_cat_B, jax.random.randint(k_verb, (batch_size,), 0,
                                      self.verb_ids.shape[1])]
    detail_B = jnp.asarray(self.noun_detail)[sel_cat_B, sel_noun_B]
    tokens_BxT = jnp.concatenate([nouns_BxN, verb_B[:, None]], axis=1)
    target_B = jnp.asarray(self.detail_ids)[detail_B]
    return Batch(tokens_BxT.astype(jnp.int32), target_B.astype(jnp.int32),
                 sel_B.astype(jnp.int32))


def make_selection_task(cfg: ml_collections.ConfigDict, seed: int) -> SelectionTask:
  """Builds the language from the ``task`` block of a config and a seed.

  Names come from the articles' examples; categories, nouns or details beyond
  the named ones get generated names (``cat5``, ``cat5_noun3``, ``detail9``).
  """
  n_cat, n_noun = cfg.n_categories, cfg.nouns_per_category
  n_verb, n_det = cfg.verbs_per_category, cfg.n_details
  named = list(_CATEGORY_WORDS.items())
  categories, noun_words, verb_words = [], [], []
  for c in range(n_cat):
    name, (nouns, verbs) = named[c] if c < len(named) else (f"cat{c}", ([], []))
    categories.append(name)
    noun_words.append([nouns[i] if i < len(nouns) else f"{name}_noun{i}"
                       for i in range(n_noun)])
    verb_words.append([verbs[i] if i < len(verbs) else f"{name}_verb{i}"
                       for i in range(n_verb)])
  detail_words = [_DETAIL_WORDS[i] if i < len(_DETAIL_WORDS) else f"detail{i}"
                  for i in range(n_det)]
  vocab = [w for ws in noun_words for w in ws]
  vocab += [w for ws in verb_words for w in ws]
  vocab += detail_words
  noun_ids = np.arange(n_cat * n_noun).reshape(n_cat, n_noun)
  verb_ids = n_cat * n_noun + np.arange(n_cat * n_verb).reshape(n_cat, n_verb)
  detail_ids = n_cat * (n_noun + n_verb) + np.arange(n_det)
  # Details are a fixed, random property of each noun, drawn once per language.
  # Within a category the nouns' details are as distinct as n_details allows
  # (a shuffled cycle), so the verb alone predicts the target no better than
  # 1 / min(nouns_per_category, n_details): the noun itself must be found.
  rng = np.random.default_rng(seed)
  noun_detail = np.stack([
      rng.permutation(np.resize(rng.permutation(n_det), n_noun)) for _ in range(n_cat)])
  return SelectionTask(tuple(vocab), tuple(categories), noun_ids, verb_ids,
                       detail_ids, noun_detail, cfg.n_slots)


def validate(c: ml_collections.ConfigDict) -> None:
  """The ``task`` block of a config using the selection language."""
  t = c.task
  config_lib.require_at_least(c, [f"task.{f}" for f in (
      "n_categories", "nouns_per_category", "verbs_per_category", "n_details", "n_slots")])
  config_lib.require(t.n_slots <= t.n_categories, "task.n_slots", t.n_slots,
                     f"1..task.n_categories ({t.n_categories})")

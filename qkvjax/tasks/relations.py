"""Tasks built on the selection task's language, for the `tied` and `heads` studies.

Both reuse the nouns, verbs and colours of ``selection.SelectionTask`` (the same
language, drawn from the same seed), so results compare with the selection
task directly.

``MatchTask`` (symmetric control for `tied`): the verb is replaced by a probe
noun, and the target is the colour of the *other* noun of the probe's category:

    bus  apple  cat  laser_dot  bread  ->  red      (apple, not bread, is red)

"Same category" is a symmetric relation between tokens of one kind, unlike
the selection task's verb -> noun. The probe's own colour is usually wrong, so
attending to itself costs accuracy: this is where W_Q = W_K, under which a
token scores itself at least as high as any key of no larger norm, should show.

``TwoRelationTask`` (for `heads`): an adverb is put just before the verb, and
the final position must output two things at once, the colour of the noun the
verb selects (selectional relation) and the manner of the adverb right before
it (previous-token relation):

    bus  apple  cat  laser_dot  gently  eat  ->  (red, manner2)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from qkvjax.tasks import base
from qkvjax.tasks import selection

_ADVERB_WORDS = ["gently", "quickly", "slowly", "loudly", "quietly", "eagerly",
                 "lazily", "boldly"]


class MatchBatch(NamedTuple):
  tokens_BxT: jax.Array     # int32: nouns, then the probe noun
  target_B: jax.Array       # colour id of the in-sequence noun of the probe's category
  target_pos_B: jax.Array   # that noun's position (the ground-truth key)


@dataclasses.dataclass(frozen=True)
class MatchTask:
  """Nouns of distinct categories, then a probe noun; predict the colour of
  the in-sequence noun sharing the probe's category (at the last position)."""

  language: selection.SelectionTask
  name = "match"

  @property
  def vocab(self) -> tuple[str, ...]:
    return self.language.vocab

  @property
  def vocab_size(self) -> int:
    return self.language.vocab_size

  @property
  def seq_len(self) -> int:
    return self.language.n_slots + 1

  def model_inputs(self, batch: MatchBatch) -> tuple[jax.Array]:
    return (batch.tokens_BxT,)

  def loss(self, logits_BxTxV: jax.Array, batch: MatchBatch):
    """Cross-entropy of the prediction at the last position (the probe)."""
    return base.cross_entropy(logits_BxTxV[:, -1], batch.target_B)

  def probe_only_accuracy(self) -> float:
    """Best accuracy of a predictor that sees only the probe: the target is
    one of the other nouns of the probe's category, so guess their most common
    detail. The bar a model that ignores the sequence cannot beat."""
    accs = []
    for row in self.language.noun_detail:
      for i in range(len(row)):
        others = np.delete(row, i)
        accs.append(np.bincount(others).max() / len(others))
    return float(np.mean(accs))

  def tables(self) -> dict:
    out = self.language.tables()
    out["probe_only_accuracy"] = self.probe_only_accuracy()
    out["sequence"] = ("n_slots nouns of distinct categories, then a probe noun "
                       "(another noun of one of those categories); predict the "
                       "detail of the in-sequence noun of the probe's category")
    return out

  def sample(self, key: jax.Array, batch_size: int) -> MatchBatch:
    """Draws a batch; a pure function of ``key``."""
    lang = self.language
    n_cat, n_noun = lang.noun_ids.shape
    noun_ids = jnp.asarray(lang.noun_ids)
    k_cat, k_noun, k_sel, k_probe = jax.random.split(key, 4)
    order = jnp.argsort(jax.random.uniform(k_cat, (batch_size, n_cat)), axis=1)
    cats_BxN = order[:, : lang.n_slots]
    which_BxN = jax.random.randint(k_noun, cats_BxN.shape, 0, n_noun)
    nouns_BxN = noun_ids[cats_BxN, which_BxN]
    sel_B = jax.random.randint(k_sel, (batch_size,), 0, lang.n_slots)
    sel_cat_B = jnp.take_along_axis(cats_BxN, sel_B[:, None], 1)[:, 0]
    sel_which_B = jnp.take_along_axis(which_BxN, sel_B[:, None], 1)[:, 0]
    # A different noun of the same category: shift by 1..n_noun-1 (mod n_noun).
    shift_B = jax.random.randint(k_probe, (batch_size,), 1, n_noun)
    probe_B = noun_ids[sel_cat_B, (sel_which_B + shift_B) % n_noun]
    detail_B = jnp.asarray(lang.noun_detail)[sel_cat_B, sel_which_B]
    tokens_BxT = jnp.concatenate([nouns_BxN, probe_B[:, None]], axis=1)
    return MatchBatch(tokens_BxT.astype(jnp.int32),
                       jnp.asarray(lang.detail_ids)[detail_B].astype(jnp.int32),
                       sel_B.astype(jnp.int32))


class TwoRelationBatch(NamedTuple):
  tokens_BxT: jax.Array      # int32: nouns, adverb, verb
  target_B: jax.Array        # colour id of the noun the verb selects
  target_pos_B: jax.Array    # that noun's position (selectional relation)
  prev_target_B: jax.Array   # manner id of the adverb before the verb
  prev_pos_B: jax.Array      # the adverb's position, T - 2 (previous-token relation)


RELATIONS = ("select", "prev")  # the two relations of TwoRelationTask, in order
RELATION_TEXT = {"select": "select: verb -> the noun it selects (answer: its colour)",
                 "prev": "prev: verb -> the token before it (answer: the adverb's manner)"}
# Per relation, the ``tables()`` entry with the best accuracy without attention: what
# the verb alone predicts of the selected noun's colour, and the most common manner.
CHANCE_KEYS = {"select": "verb_only_accuracy", "prev": "manner_majority_accuracy"}


@dataclasses.dataclass(frozen=True)
class TwoRelationTask:
  """The selection task with an adverb inserted before the verb; two targets."""

  language: selection.SelectionTask
  adverb_ids: np.ndarray     # [n_adverbs]
  manner_ids: np.ndarray     # [n_manners]
  adverb_manner: np.ndarray  # [n_adverbs] manner index of each adverb
  vocab: tuple[str, ...]
  name = "two_relations"

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def seq_len(self) -> int:
    return self.language.n_slots + 2

  def model_inputs(self, batch: TwoRelationBatch) -> tuple[jax.Array]:
    return (batch.tokens_BxT,)

  def relation_outputs(self, logits_BxV: jax.Array, batch: TwoRelationBatch
                       ) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Per relation: (mean cross-entropy over its own answer tokens, correct_B)."""
    out = {}
    for r, target_B in zip(RELATIONS, (batch.target_B, batch.prev_target_B)):
      ids = self.output_ids(r)
      label_V = np.zeros(self.vocab_size, np.int32)
      label_V[ids] = np.arange(len(ids))
      logits_BxN = logits_BxV[:, ids]
      label_B = jnp.asarray(label_V)[target_B]
      loss = optax.softmax_cross_entropy_with_integer_labels(logits_BxN, label_B).mean()
      out[r] = (loss, jnp.argmax(logits_BxN, -1) == label_B)
    return out

  def loss(self, logits_BxTxV: jax.Array, batch: TwoRelationBatch):
    """The sum of the two relations' cross-entropies at the last position;
    ``accuracy`` counts a row right when both answers are."""
    rel = self.relation_outputs(logits_BxTxV[:, -1], batch)
    metrics = {"accuracy": jnp.mean(rel["select"][1] & rel["prev"][1]).astype(jnp.float32)}
    for r, (r_loss, correct_B) in rel.items():
      metrics[f"loss/{r}"] = r_loss
      metrics[f"accuracy/{r}"] = jnp.mean(correct_B).astype(jnp.float32)
    return sum(l for l, _ in rel.values()), metrics

  def output_ids(self, relation: str) -> np.ndarray:
    """Token ids the answer for ``relation`` is read from (colours or manners)."""
    return {"select": self.language.detail_ids, "prev": self.manner_ids}[relation]

  def tables(self) -> dict:
    out = self.language.tables()
    out["vocab"] = list(self.vocab)
    out["adverbs"] = [{"token": self.vocab[a], "id": int(a),
                       "manner": self.vocab[self.manner_ids[m]]}
                      for a, m in zip(self.adverb_ids, self.adverb_manner)]
    out["manners"] = [self.vocab[m] for m in self.manner_ids]
    out["manner_majority_accuracy"] = float(
        np.bincount(self.adverb_manner).max() / len(self.adverb_manner))
    out["sequence"] = ("n_slots nouns of distinct categories, an adverb, then a verb; "
                       "predict the detail of the noun the verb selects (relation "
                       "'select') and the manner of the adverb just before the verb "
                       "(relation 'prev')")
    return out

  def sample(self, key: jax.Array, batch_size: int) -> TwoRelationBatch:
    """Draws a batch; a pure function of ``key``."""
    k_sel, k_adv = jax.random.split(key)
    sel = self.language.sample(k_sel, batch_size)
    which_B = jax.random.randint(k_adv, (batch_size,), 0, len(self.adverb_ids))
    adverb_B = jnp.asarray(self.adverb_ids)[which_B]
    tokens_BxT = jnp.concatenate(
        [sel.tokens_BxT[:, :-1], adverb_B[:, None], sel.tokens_BxT[:, -1:]], axis=1)
    manner_B = jnp.asarray(self.manner_ids)[jnp.asarray(self.adverb_manner)[which_B]]
    return TwoRelationBatch(
        tokens_BxT.astype(jnp.int32), sel.target_B, sel.target_pos_B,
        manner_B.astype(jnp.int32),
        jnp.full((batch_size,), self.seq_len - 2, jnp.int32))


def make_match_task(cfg: ml_collections.ConfigDict, seed: int) -> MatchTask:
  """The symmetric control on the language of ``selection.make_selection_task``."""
  if cfg.nouns_per_category < 2:
    raise ValueError("the match task needs task.nouns_per_category >= 2")
  return MatchTask(selection.make_selection_task(cfg, seed))


def make_two_relation_task(cfg: ml_collections.ConfigDict, seed: int) -> TwoRelationTask:
  """The selection language plus ``cfg.n_adverbs`` adverbs, each with a manner
  from ``cfg.n_manners`` manner words, drawn once per language and as evenly
  as the counts allow (a shuffled cycle, like the nouns' colours), so the
  most common manner is right only 1 / min(n_adverbs, n_manners) of the time
  or a little more."""
  lang = selection.make_selection_task(cfg, seed)
  n_adv, n_man = cfg.n_adverbs, cfg.n_manners
  adverbs = [_ADVERB_WORDS[i] if i < len(_ADVERB_WORDS) else f"adverb{i}"
             for i in range(n_adv)]
  manners = [f"manner{i}" for i in range(n_man)]
  vocab = lang.vocab + tuple(adverbs) + tuple(manners)
  adverb_ids = lang.vocab_size + np.arange(n_adv)
  manner_ids = lang.vocab_size + n_adv + np.arange(n_man)
  rng = np.random.default_rng([seed, 1])
  adverb_manner = rng.permutation(np.resize(rng.permutation(n_man), n_adv))
  return TwoRelationTask(lang, adverb_ids, manner_ids, adverb_manner, vocab)

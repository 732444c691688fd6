"""A generated language with ambiguous words whose sense is set by context.

Article 001's example: "apple" is a fruit in one sentence and a company in
another. Every ambiguous word here has two senses, one per *domain*
(``nature``: apple the fruit, jaguar the cat, python the snake; ``tech``:
apple the company, jaguar the carmaker, python the language). A sequence is
context words (cue words of the sense's domain, or neutral words) with one
ambiguous word at a random position ``p``; the target, predicted at ``p``
itself, is the word's sense in that context:

    the  ripe  new  apple  ...   ->  apple:fruit     (at "apple")
    my   stock  a   apple  ...   ->  apple:company

At least one cue word precedes ``p``, so a causal model can always resolve
the sense, but only by reading the context: the word and its position alone
give the right sense half of the time.
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

DOMAINS = ("nature", "tech")
CHANCE = 0.5  # accuracy from the word and its position alone: a coin for the sense
# word: (its nature sense, its tech sense)
_AMBIGUOUS = [("apple", ("fruit", "company")), ("jaguar", ("cat", "carmaker")),
              ("python", ("snake", "language")), ("amazon", ("river", "retailer")),
              ("mouse", ("rodent", "device")), ("java", ("coffee", "language")),
              ("blackberry", ("berry", "phone")), ("shell", ("seashell", "terminal"))]
_CUES = {
    "nature": ["eat", "ripe", "tree", "forest", "wild", "juice", "leaf", "orchard",
               "jungle", "swim", "grow", "seed"],
    "tech": ["stock", "ceo", "code", "launch", "shares", "software", "screen",
             "market", "app", "investor", "release", "laptop"],
}
_NEUTRAL = ["the", "a", "new", "big", "saw", "about", "today", "very", "old", "my",
            "its", "and"]


class ContextBatch(NamedTuple):
  tokens_BxT: jax.Array     # int32 token ids
  target_B: jax.Array       # the meaning token to predict at target_pos
  target_pos_B: jax.Array   # position of the ambiguous word (prediction made there)
  sense_B: jax.Array        # 0 = nature, 1 = tech: set by the context
  word_B: jax.Array         # which ambiguous word (index into ``words``)
  cue_BxT: jax.Array        # bool: this position holds a cue word


@dataclasses.dataclass(frozen=True)
class ContextTask:
  """Vocabulary and tables of one generated language of ambiguous words."""

  vocab: tuple[str, ...]
  words: tuple[str, ...]          # the ambiguous words
  ambiguous_ids: np.ndarray       # [n_ambiguous]
  meaning_ids: np.ndarray         # [n_ambiguous, 2]: (word, sense) -> target token
  cue_ids: np.ndarray             # [2, n_cues]: cue words of each domain
  neutral_ids: np.ndarray         # [n_neutral]
  seq_len: int
  min_pos: int                    # the ambiguous word sits at min_pos..seq_len-1
  cue_prob: float                 # chance that a context position holds a cue
  name = "context"

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def model_inputs(self, batch: ContextBatch) -> tuple[jax.Array]:
    return (batch.tokens_BxT,)

  def loss(self, logits_BxTxV: jax.Array, batch: ContextBatch):
    """Cross-entropy of the sense, predicted at the ambiguous word itself."""
    return base.cross_entropy(base.at_position(logits_BxTxV, batch.target_pos_B),
                              batch.target_B)

  @property
  def n_ambiguous(self) -> int:
    return len(self.words)

  @property
  def positions(self) -> np.ndarray:
    """Every position the ambiguous word may take."""
    return np.arange(self.min_pos, self.seq_len)

  def tables(self) -> dict:
    """The vocabulary and tables, as saved with a run's results."""
    return {
        "vocab": list(self.vocab),
        "ambiguous": [{"token": w, "id": int(self.ambiguous_ids[i]),
                       "senses": {d: self.vocab[self.meaning_ids[i, s]]
                                  for s, d in enumerate(DOMAINS)}}
                      for i, w in enumerate(self.words)],
        "cues": {d: [self.vocab[c] for c in self.cue_ids[s]]
                 for s, d in enumerate(DOMAINS)},
        "neutral": [self.vocab[n] for n in self.neutral_ids],
        "seq_len": self.seq_len,
        "positions": self.positions.tolist(),
        "cue_prob": self.cue_prob,
        "sequence": "context words (cues of the sense's domain or neutral words, "
                    "at least one cue before the ambiguous word) with one ambiguous "
                    "word; predict, at the ambiguous word, its sense in this context",
    }

  def build(self, key: jax.Array, word_B: jax.Array, pos_B: jax.Array,
            sense_B: jax.Array) -> ContextBatch:
    """Random contexts around the given words, positions and senses."""
    b, t = word_B.shape[0], self.seq_len
    k_cue, k_force, k_which, k_neutral = jax.random.split(key, 4)
    t_BxT = jnp.arange(t)[None, :]
    forced_B = jnp.floor(jax.random.uniform(k_force, (b,)) * pos_B).astype(jnp.int32)
    cue_BxT = jax.random.bernoulli(k_cue, self.cue_prob, (b, t))
    cue_BxT = (cue_BxT | (t_BxT == forced_B[:, None])) & (t_BxT != pos_B[:, None])
    cue_tok_BxT = jnp.asarray(self.cue_ids)[
        sense_B[:, None], jax.random.randint(k_which, (b, t), 0, self.cue_ids.shape[1])]
    neutral_tok_BxT = jnp.asarray(self.neutral_ids)[
        jax.random.randint(k_neutral, (b, t), 0, len(self.neutral_ids))]
    tokens_BxT = jnp.where(
        t_BxT == pos_B[:, None], jnp.asarray(self.ambiguous_ids)[word_B][:, None],
        jnp.where(cue_BxT, cue_tok_BxT, neutral_tok_BxT))
    target_B = jnp.asarray(self.meaning_ids)[word_B, sense_B]
    i32 = lambda x: x.astype(jnp.int32)
    return ContextBatch(i32(tokens_BxT), i32(target_B), i32(pos_B), i32(sense_B),
                        i32(word_B), cue_BxT)

  def sample(self, key: jax.Array, batch_size: int) -> ContextBatch:
    """Draws a batch (word, position, sense uniform); a pure function of ``key``."""
    k_word, k_pos, k_sense, k_ctx = jax.random.split(key, 4)
    word_B = jax.random.randint(k_word, (batch_size,), 0, self.n_ambiguous)
    pos_B = jax.random.randint(k_pos, (batch_size,), self.min_pos, self.seq_len)
    sense_B = jax.random.randint(k_sense, (batch_size,), 0, 2)
    return self.build(k_ctx, word_B, pos_B, sense_B)

  def probe_set(self, key: jax.Array, replicates: int) -> tuple[ContextBatch, np.ndarray]:
    """A balanced grid for measuring: every (word, position) *group* holds
    ``replicates`` random contexts of each sense. Returns the batch and a
    static mask that is True on the first half of each (group, sense) cell's
    replicates (they fit a probe; the rest is held out)."""
    word, pos, sense, rep = (a.ravel() for a in np.meshgrid(
        np.arange(self.n_ambiguous), self.positions, np.arange(2),
        np.arange(replicates), indexing="ij"))
    batch = self.build(key, jnp.asarray(word), jnp.asarray(pos), jnp.asarray(sense))
    return batch, rep < replicates // 2

  def group(self, batch: ContextBatch) -> jax.Array:
    """The (word, position) group of each row, 0..n_ambiguous * n_positions - 1."""
    return batch.word_B * len(self.positions) + batch.target_pos_B - self.min_pos

  def context_variation(self, x_NxF: jax.Array, batch: ContextBatch):
    """``(spread, sense_share)`` of vectors measured at the ambiguous word of
    each row of a probe set. Within a group (same word, same position, many
    contexts): spread = sqrt(2 mean ||x - mean_group||^2 / mean ||x||^2), the
    RMS distance between two contexts' vectors over their RMS norm; and
    sense_share = mean ||mean_(group,sense) - mean_group||^2 / mean ||x -
    mean_group||^2, the share of that variation lying between the senses."""
    x = x_NxF.astype(jnp.float32)
    n_groups, group_N = self.n_ambiguous * len(self.positions), self.group(batch)
    # From each group's first row, so identical vectors give exactly 0, not
    # the round-off of a mean (both statistics are shift-free).
    first_G = jax.ops.segment_min(jnp.arange(x.shape[0]), group_N, n_groups)
    shifted = x - x[first_G[group_N]]
    def means(ids, n):
      total = jax.ops.segment_sum(shifted, ids, n)
      count = jax.ops.segment_sum(jnp.ones_like(ids, jnp.float32), ids, n)
      return (total / jnp.maximum(count, 1.0)[:, None])[ids]
    dev = shifted - means(group_N, n_groups)
    between = means(group_N * 2 + batch.sense_B, 2 * n_groups) - means(group_N, n_groups)
    sq_norm, within = jnp.mean(jnp.sum(x**2, -1)), jnp.mean(jnp.sum(dev**2, -1))
    spread = jnp.sqrt(2.0 * within / (sq_norm + 1e-30))
    # The floor makes 0/0 (identical vectors) a 0.
    return spread, jnp.mean(jnp.sum(between**2, -1)) / (within + 1e-10 * sq_norm + 1e-30)

  def contrast_set(self, key: jax.Array, n: int) -> ContextBatch:
    """The first ambiguous word at the last position in ``n`` contexts of
    each sense (the nature contexts first)."""
    sense_B = jnp.repeat(jnp.arange(2), n)
    return self.build(key, jnp.zeros(2 * n, jnp.int32),
                      jnp.full(2 * n, self.seq_len - 1, jnp.int32), sense_B)


def _names(named: list[str], n: int, stem: str) -> list[str]:
  return [named[i] if i < len(named) else f"{stem}{i}" for i in range(n)]


def make_context_task(cfg: ml_collections.ConfigDict) -> ContextTask:
  """Builds the language from the ``task`` block of a config. Words beyond
  the named ones get generated names (``word9``, ``nature_cue12``)."""
  words, senses = [], []
  for i in range(cfg.n_ambiguous):
    w, s = _AMBIGUOUS[i] if i < len(_AMBIGUOUS) else (f"word{i}", DOMAINS)
    words.append(w)
    senses.append(s)
  vocab = list(words)
  vocab += [f"{w}:{s}" for w, ss in zip(words, senses) for s in ss]
  for d in DOMAINS:
    vocab += _names(_CUES[d], cfg.n_cues, f"{d}_cue")
  vocab += _names(_NEUTRAL, cfg.n_neutral, "neutral")
  n = cfg.n_ambiguous
  ambiguous_ids = np.arange(n)
  meaning_ids = n + np.arange(2 * n).reshape(n, 2)
  cue_ids = 3 * n + np.arange(2 * cfg.n_cues).reshape(2, cfg.n_cues)
  neutral_ids = 3 * n + 2 * cfg.n_cues + np.arange(cfg.n_neutral)
  return ContextTask(tuple(vocab), tuple(words), ambiguous_ids, meaning_ids, cue_ids,
                     neutral_ids, cfg.seq_len, cfg.min_pos, float(cfg.cue_prob))


def validate(c: ml_collections.ConfigDict) -> None:
  """The ``task`` block of a config using this language."""
  t = c.task
  config_lib.require_at_least(c, [f"task.{f}" for f in (
      "n_ambiguous", "n_cues", "n_neutral", "min_pos")])
  config_lib.require(t.seq_len > t.min_pos, "task.seq_len", t.seq_len,
                     f"an integer > task.min_pos ({t.min_pos})")
  config_lib.require(0.0 <= t.cue_prob <= 1.0, "task.cue_prob", t.cue_prob,
                     "0 <= value <= 1")

"""Bietti et al.'s (2023) bigram sequences with in-context trigger bigrams,
on the characters of the shipped documentation prose.

Global statistics: the character unigram and bigram frequencies of
``text.prose_paragraphs()`` (lowercased by default; the vocabulary is the
``vocab_size`` most frequent characters, 0 = all of them; other characters are
dropped from the text before counting). A sequence of ``seq_len + 1``
characters starts from the unigram and follows the bigram chain, except that
``n_triggers`` *trigger* characters each get, per sequence, their own
*output* character (from the unigram, ``outputs="unigram"``, or uniform over
the vocabulary): within that sequence a trigger is always followed by its
output. Uniform outputs are mostly rare characters, which a model can spot
and copy without an induction head. The triggers are the most frequent
characters, the same in every sequence (``fixed_triggers``; our reading of
Bietti et al.'s experiments, not checked against their code), or distinct
characters drawn from the unigram per sequence (harder: any token may be a
trigger).

Per input position the ground truth (``kind_BxT``) says what the next token
is: ``BIGRAM`` (drawn from the global bigram), ``FIRST`` (the output after a
trigger's first occurrence: unpredictable, the bigram baseline) or
``REPEAT`` (a trigger seen before in the sequence: predictable only by
looking back, what an induction head does).

Olsson et al.'s (2022) probe (``repeated``): ``probe_len`` distinct random
characters, repeated once, for previous-token and prefix-matching scores.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from qkvjax import config as config_lib
from qkvjax.tasks import text

BIGRAM, FIRST, REPEAT = 0, 1, 2
KINDS = {"bigram": BIGRAM, "first": FIRST, "repeat": REPEAT}
OUTPUTS = ("unigram", "uniform")
SMOOTHING = 0.01  # added to every bigram count, so every transition is possible


class Batch(NamedTuple):
  tokens_BxT: jax.Array    # int32 model input
  target_BxT: jax.Array    # the next token at each position
  kind_BxT: jax.Array      # int32: BIGRAM, FIRST or REPEAT
  triggers_BxK: jax.Array  # this sequence's trigger tokens
  outputs_BxK: jax.Array   # and their outputs


@functools.lru_cache(maxsize=4)
def corpus_characters(lowercase: bool) -> str:
  text_ = " ".join(text.prose_paragraphs())
  return text_.lower() if lowercase else text_


def char_statistics(lowercase: bool, vocab_size: int):
  """(vocabulary, unigram [V], bigram [V, V] row-stochastic, n characters)."""
  chars = corpus_characters(lowercase)
  counts = collections.Counter(chars)
  ordered = sorted(counts, key=lambda ch: (-counts[ch], ch))
  vocab = tuple(ordered[:vocab_size] if vocab_size else ordered)
  index = {ch: i for i, ch in enumerate(vocab)}
  stream = np.array([index[ch] for ch in chars if ch in index], np.int64)
  unigram = np.bincount(stream, minlength=len(vocab)) / stream.size
  pairs = np.zeros((len(vocab), len(vocab)))
  np.add.at(pairs, (stream[:-1], stream[1:]), 1.0)
  pairs += SMOOTHING
  return vocab, unigram, pairs / pairs.sum(1, keepdims=True), int(stream.size)


def position_kinds(tokens_BxT: jax.Array, triggers_BxK: jax.Array) -> jax.Array:
  """Per position: REPEAT where the token is a trigger seen earlier in the
  row, FIRST where it is a trigger's first occurrence, BIGRAM otherwise."""
  hit_BxTxK = tokens_BxT[:, :, None] == triggers_BxK[:, None, :]
  seen_BxTxK = jnp.cumsum(hit_BxTxK, axis=1)
  is_trigger_BxT = hit_BxTxK.any(-1)
  repeat_BxT = (hit_BxTxK & (seen_BxTxK >= 2)).any(-1)
  return jnp.where(repeat_BxT, REPEAT, jnp.where(is_trigger_BxT, FIRST, BIGRAM)).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class InductionTask:
  """Bigram sequences with sequence-specific trigger -> output pairs."""

  name = "induction"

  vocab: tuple[str, ...]
  unigram: np.ndarray      # [V]
  bigram: np.ndarray       # [V, V], rows sum to 1
  n_chars: int
  window: int
  n_triggers: int
  probe_len: int
  lowercase: bool
  fixed_triggers: bool = True
  outputs: str = "unigram"

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def seq_len(self) -> int:
    return self.window

  def model_inputs(self, batch: Batch) -> tuple[jax.Array]:
    return (batch.tokens_BxT,)

  def sample(self, key: jax.Array, batch_size: int) -> Batch:
    """A batch of sequences; a pure function of ``key``."""
    k_trig, k_out, k_first, k_chain = jax.random.split(key, 4)
    log_uni_V = jnp.log(jnp.asarray(self.unigram, jnp.float32) + 1e-12)
    # Inverse-CDF sampling of the chain: one uniform per step, drawn up front.
    cdf_VxV = jnp.asarray(np.cumsum(self.bigram, 1), jnp.float32)
    # Distinct triggers drawn from the unigram: the top K of Gumbel-perturbed log-probs.
    gumbel_BxV = jax.random.gumbel(k_trig, (batch_size, self.vocab_size))
    triggers_BxK = jnp.argsort(-(log_uni_V + gumbel_BxV), axis=1)[:, :self.n_triggers]
    if self.fixed_triggers:  # the vocabulary is sorted by frequency
      triggers_BxK = jnp.broadcast_to(jnp.arange(self.n_triggers), triggers_BxK.shape)
    if self.outputs == "unigram":
      outputs_BxK = jax.random.categorical(k_out, log_uni_V, shape=(batch_size, self.n_triggers))
    else:
      outputs_BxK = jax.random.randint(k_out, (batch_size, self.n_triggers), 0, self.vocab_size)
    first_B = jax.random.categorical(k_first, log_uni_V, shape=(batch_size,))

    def step(prev_B, u_B):
      drawn_B = jnp.minimum(jnp.sum(cdf_VxV[prev_B] < u_B[:, None], 1), self.vocab_size - 1)
      hit_BxK = prev_B[:, None] == triggers_BxK
      forced_B = jnp.sum(jnp.where(hit_BxK, outputs_BxK, 0), 1)
      nxt_B = jnp.where(hit_BxK.any(1), forced_B, drawn_B)
      return nxt_B, nxt_B

    u_TxB = jax.random.uniform(k_chain, (self.window, batch_size))
    _, rest_TxB = jax.lax.scan(step, first_B, u_TxB)
    seq_BxT1 = jnp.concatenate([first_B[:, None], rest_TxB.T], 1).astype(jnp.int32)
    tokens_BxT = seq_BxT1[:, :-1]
    return Batch(tokens_BxT, seq_BxT1[:, 1:], position_kinds(tokens_BxT, triggers_BxK),
                 triggers_BxK.astype(jnp.int32), outputs_BxK.astype(jnp.int32))

  def repeated(self, key: jax.Array, batch_size: int) -> jax.Array:
    """Olsson et al.'s probe: ``probe_len`` distinct random tokens, twice
    [B, 2 * probe_len]."""
    keys = jax.random.split(key, batch_size)
    half_BxL = jax.vmap(lambda k: jax.random.permutation(k, self.vocab_size)[:self.probe_len])(
        keys)
    return jnp.concatenate([half_BxL, half_BxL], 1).astype(jnp.int32)

  def loss(self, logits_BxTxV: jax.Array, batch: Batch):
    """Mean cross-entropy over every position, and per position kind."""
    ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, batch.target_BxT)
    hit_BxT = (jnp.argmax(logits_BxTxV, -1) == batch.target_BxT).astype(jnp.float32)
    return jnp.mean(ce_BxT), {"accuracy": jnp.mean(hit_BxT),
                              **kind_metrics(ce_BxT, hit_BxT, batch.kind_BxT)}

  def tables(self) -> dict:
    return {"source": text.SOURCE, "python": sys.version.split()[0],
            "vocab": list(self.vocab), "unigram": self.unigram.tolist(),
            "n_chars": self.n_chars, "lowercase": self.lowercase, "seq_len": self.window,
            "n_triggers": self.n_triggers, "probe_len": self.probe_len,
            "fixed_triggers": self.fixed_triggers, "outputs": self.outputs,
            "bigram_entropy": self.bigram_entropy(),
            "uniform_output_loss": float(np.log(self.vocab_size))}

  def bigram_entropy(self) -> float:
    """Conditional entropy (nats) of the next character given the current
    one under the global bigram: the best loss at BIGRAM positions."""
    h_V = -np.sum(self.bigram * np.log(self.bigram), 1)
    return float(np.sum(self.unigram * h_V))


def kind_metrics(ce_BxT, hit_BxT, kind_BxT) -> dict[str, jax.Array]:
  """``loss/<kind>`` and ``accuracy/<kind>`` (NaN where a kind is absent)."""
  out = {}
  for name, k in KINDS.items():
    w_BxT = (kind_BxT == k).astype(jnp.float32)
    n = jnp.sum(w_BxT)
    safe = jnp.maximum(n, 1.0)
    out[f"loss/{name}"] = jnp.where(n > 0, jnp.sum(ce_BxT * w_BxT) / safe, jnp.nan)
    out[f"accuracy/{name}"] = jnp.where(n > 0, jnp.sum(hit_BxT * w_BxT) / safe, jnp.nan)
  return out


def make_induction_task(cfg: ml_collections.ConfigDict) -> InductionTask:
  """The task from a config's ``task`` block."""
  vocab, unigram, bigram, n = char_statistics(bool(cfg.lowercase), int(cfg.vocab_size))
  return InductionTask(vocab, unigram, bigram, n, int(cfg.seq_len), int(cfg.n_triggers),
                       int(cfg.probe_len), bool(cfg.lowercase),
                       bool(cfg.get("fixed_triggers", True)), str(cfg.get("outputs", "unigram")))


def validate(c: ml_collections.ConfigDict) -> None:
  """The ``task`` block: triggers fewer than the vocabulary, a sequence long
  enough for the probe's repeat."""
  t = c.task
  distinct = len(set(corpus_characters(bool(t.lowercase))))
  config_lib.require(isinstance(t.vocab_size, int) and (t.vocab_size == 0 or
                                                        4 <= t.vocab_size <= distinct),
                     "task.vocab_size", t.vocab_size,
                     f"0 (every character) or an integer in 4..{distinct} (the text's "
                     "distinct characters)")
  v = t.vocab_size or distinct
  config_lib.require(t.get("outputs", "unigram") in OUTPUTS, "task.outputs",
                     t.get("outputs"), ", ".join(OUTPUTS))
  config_lib.require(isinstance(t.n_triggers, int) and 1 <= t.n_triggers < v,
                     "task.n_triggers", t.n_triggers,
                     f"an integer in 1..{v - 1} (fewer triggers than the {v}-token vocabulary)")
  config_lib.require(isinstance(t.probe_len, int) and 2 <= t.probe_len <= v,
                     "task.probe_len", t.probe_len,
                     f"an integer in 2..{v} (distinct tokens of the repeated probe)")
  config_lib.require(isinstance(t.seq_len, int) and 2 * t.probe_len <= t.seq_len <= 4096,
                     "task.seq_len", t.seq_len,
                     f"an integer in {2 * t.probe_len}..4096 (room for the probe's "
                     f"{t.probe_len} tokens and their repeat)")

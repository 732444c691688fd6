"""Translation with cross-attention: spelling -> pronunciation on real data.

The articles' own example is translation, where the decoder's queries look
up the encoder's keys and values (cross-attention). Here a small
encoder-decoder (``qkvjax.seq2seq``) learns English spelling -> ARPAbet
pronunciation from the CMU Pronouncing Dictionary (``qkvjax.cmudict_data``),
several seeds vmapped in one program. Self- and cross-attention are measured
separately: Q/K/V gradient norms, distance from init, spectra and effective
rank; the cross-attention's letter -> phoneme alignment (Spearman rho between
decoder position and the most-attended letter; expected near-monotonic);
phoneme and word accuracy on held-out words.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import ml_collections
import numpy as np
import optax

from qkvjax import cmudict_data
from qkvjax import config as config_lib
from qkvjax import metrics as metrics_lib
from qkvjax import plotting
from qkvjax import report
from qkvjax import results
from qkvjax import runner
from qkvjax import seq2seq
from qkvjax import stats
from qkvjax import train

EXP = "translation"
CONDITION = "cmudict_g2p"
QKV = ("query", "key", "value")
BLOCK_NAMES = tuple(f"{stack}_{block}" for stack, block in seq2seq.BLOCKS)
BLOCK_TITLES = {"encoder_self": "encoder self-attention",
                "decoder_self": "decoder causal self-attention",
                "decoder_cross": "decoder cross-attention (Q: decoder, K, V: encoder)"}
BLOCK_SHORT = {"encoder_self": "encoder self", "decoder_self": "decoder self (causal)",
               "decoder_cross": "cross (Q dec, K/V enc)"}
ARTICLE_000 = "../shared/seeds/000 (division of labour among Q, K, V)"
ARTICLE_002 = "../shared/seeds/002 (self- vs cross-attention)"
ISSUE_3 = "issue 3, item 6"


# ---- data --------------------------------------------------------------------

def load_data(d: ml_collections.ConfigDict) -> cmudict_data.G2PData:
  return cmudict_data.load(d.min_word_len, d.max_word_len, d.n_train, d.n_heldout,
                           d.heldout_fraction)


def majority_baseline(data: cmudict_data.G2PData) -> tuple[str, float]:
  """The most frequent held-out phoneme and its share of held-out phonemes:
  the accuracy of always predicting it."""
  tgt = data.heldout.tgt_out_BxT
  ids = tgt[(tgt != cmudict_data.PAD) & (tgt != cmudict_data.EOS)]
  counts = np.bincount(ids, minlength=len(cmudict_data.PHONEME_VOCAB))
  return cmudict_data.PHONEME_VOCAB[int(np.argmax(counts))], float(counts.max() / ids.size)


# ---- metrics (pure, inside the jit) -----------------------------------------

def _norm(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32))))


def _cos(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.sum(a * b) / (_norm(a) * _norm(b) + 1e-12)


def token_metrics(logits_BxTxV: jax.Array, tgt_out_BxT: jax.Array) -> metrics_lib.Metrics:
  """Teacher-forced cross-entropy over labels (phonemes and <eos>), phoneme
  accuracy over phonemes only, and the share of words with every label right."""
  is_label_BxT = tgt_out_BxT != cmudict_data.PAD
  is_phoneme_BxT = is_label_BxT & (tgt_out_BxT != cmudict_data.EOS)
  ce_BxT = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, tgt_out_BxT)
  correct_BxT = jnp.argmax(logits_BxTxV, -1) == tgt_out_BxT
  return {
      "loss": jnp.sum(jnp.where(is_label_BxT, ce_BxT, 0.0)) / jnp.sum(is_label_BxT),
      "phoneme_acc": jnp.sum(correct_BxT & is_phoneme_BxT) / jnp.sum(is_phoneme_BxT),
      "word_acc_tf": jnp.mean(jnp.all(correct_BxT | ~is_label_BxT, -1)),
  }


def spearman_with_position(argmax_BxT: jax.Array, valid_BxT: jax.Array):
  """Per row: Spearman rho between position t and ``argmax[t]`` over the valid
  positions (a prefix), ties given average ranks. Returns ``(rho_B,
  counted_B)``: rows with < 3 valid positions are not counted; a constant
  argmax (no order at all) counts as rho = 0."""
  t = argmax_BxT.shape[-1]
  pos_T = jnp.arange(t, dtype=jnp.float32)
  vj = valid_BxT[:, None, :]
  a_i, a_j = argmax_BxT[:, :, None], argmax_BxT[:, None, :]
  rank_BxT = (jnp.sum((a_j < a_i) & vj, -1)
              + (jnp.sum((a_j == a_i) & vj, -1) - 1) / 2).astype(jnp.float32)
  n_B = jnp.sum(valid_BxT, -1)
  w_BxT = valid_BxT.astype(jnp.float32)
  mean = lambda x: jnp.sum(x * w_BxT, -1, keepdims=True) / jnp.maximum(n_B, 1)[:, None]
  dr_BxT = (rank_BxT - mean(rank_BxT)) * w_BxT
  dp_BxT = (pos_T[None] - mean(jnp.broadcast_to(pos_T, rank_BxT.shape))) * w_BxT
  var_r, var_p = jnp.sum(dr_BxT**2, -1), jnp.sum(dp_BxT**2, -1)
  rho_B = jnp.where(var_r > 0, jnp.sum(dr_BxT * dp_BxT, -1)
                    / jnp.sqrt(jnp.maximum(var_r * var_p, 1e-12)), 0.0)
  return rho_B, n_B >= 3


def cross_attention_metrics(cross: tuple[seq2seq.AttnTrace, ...],
                            tgt_out_BxT: jax.Array) -> metrics_lib.Metrics:
  """Per cross-attention layer and head (and the head-mean map): monotonicity
  of the letter each phoneme position attends to most, and attention entropy."""
  out: metrics_lib.Metrics = {}
  is_phoneme_BxT = (tgt_out_BxT != cmudict_data.PAD) & (tgt_out_BxT != cmudict_data.EOS)
  for l, tr in enumerate(cross):
    w_BxHxTxS = tr.weights_BxHxTxS
    maps = {f"H{h}": w_BxHxTxS[:, h] for h in range(w_BxHxTxS.shape[1])}
    maps["mean"] = jnp.mean(w_BxHxTxS, 1)
    for name, w_BxTxS in maps.items():
      rho_B, counted_B = spearman_with_position(jnp.argmax(w_BxTxS, -1), is_phoneme_BxT)
      out[f"cross_monotonic/L{l}/{name}"] = (jnp.sum(jnp.where(counted_B, rho_B, 0.0))
                                             / jnp.maximum(jnp.sum(counted_B), 1))
      ent_BxT = -jnp.sum(w_BxTxS * jnp.log(w_BxTxS + 1e-30), -1)
      out[f"cross_entropy/L{l}/{name}"] = (jnp.sum(jnp.where(is_phoneme_BxT, ent_BxT, 0.0))
                                           / jnp.sum(is_phoneme_BxT))
  return out


def matrix_metrics(params, init_params, grads) -> metrics_lib.Metrics:
  """Per attention block and matrix: gradient norm, (relative) distance from
  init, norm; per W_Q, W_K, W_V (as M x H*D): singular values, effective rank;
  per pair, the cosine between their cumulative updates."""
  out: metrics_lib.Metrics = {}
  p, p0 = seq2seq.named_matrices(params), seq2seq.named_matrices(init_params)
  g = seq2seq.named_matrices(grads)
  for key, w in p.items():
    dist = _norm(w - p0[key])
    out[f"grad_norm/{key}"] = _norm(g[key])
    out[f"rel_dist_init/{key}"] = dist / (_norm(p0[key]) + 1e-12)
    out[f"param_norm/{key}"] = _norm(w)
    block_layer, name = key.rsplit("/", 1)
    if name in QKV:
      s = jnp.linalg.svd(w.reshape(w.shape[0], -1), compute_uv=False)
      out[f"eff_rank/{key}"] = metrics_lib.effective_rank(s)
      for i in range(s.shape[0]):
        out[f"sv/{key}/{i:03d}"] = s[i]
    if name == "value":
      delta = {n: p[f"{block_layer}/{n}"] - p0[f"{block_layer}/{n}"] for n in QKV}
      for a, b in (("query", "key"), ("query", "value"), ("key", "value")):
        out[f"update_cos/{block_layer}/{a}_{b}"] = _cos(delta[a], delta[b])
  return out


class Seq2SeqTrainer(train.Trainer):
  """``train.Trainer`` with the encoder-decoder, its masked loss and metrics;
  ``train_step``, the vmap over seeds, ``lax.scan`` chunks and the seed-axis
  sharding are the base class's."""

  task: cmudict_data.G2PData

  def init_state(self, key: jax.Array) -> train.TrainState:
    k_params, k_data = jax.random.split(key)
    d = self.task
    params = seq2seq.init_params(k_params, self.config.model, d.src_vocab_size,
                                 d.tgt_vocab_size, d.src_len, d.tgt_len)
    return train.TrainState(params, self.optimizer.init(params), params,
                            jnp.zeros((), jnp.int32), k_data, jnp.zeros((), bool),
                            jnp.full((), -1, jnp.int32))

  def loss_fn(self, params, batch: cmudict_data.Seq2SeqBatch):
    logits_BxTxV, trace = seq2seq.forward(params, batch.src_BxS, batch.tgt_in_BxT)
    return token_metrics(logits_BxTxV, batch.tgt_out_BxT)["loss"], (logits_BxTxV, trace)

  def measure_one(self, state: train.TrainState) -> metrics_lib.Metrics:
    """Metrics at ``state.step``: on the batch the next step trains on, and
    teacher-forced on the whole held-out set."""
    batch = self.batch(state)
    (_, (logits_BxTxV, _)), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(
        state.params, batch)
    train_m = token_metrics(logits_BxTxV, batch.tgt_out_BxT)
    out = {"loss": train_m["loss"], "accuracy": train_m["phoneme_acc"]}
    held = self.task.heldout
    logits_h, trace_h = seq2seq.forward(state.params, jnp.asarray(held.src_BxS),
                                        jnp.asarray(held.tgt_in_BxT))
    tgt_out_h = jnp.asarray(held.tgt_out_BxT)
    out.update({f"heldout/{k}": v for k, v in token_metrics(logits_h, tgt_out_h).items()})
    out.update(cross_attention_metrics(trace_h.decoder_cross, tgt_out_h))
    out.update(matrix_metrics(state.params, state.init_params, grads))
    out["diverged"] = state.diverged
    out["diverged_step"] = state.diverged_step
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


# ---- after training (host) --------------------------------------------------

def edit_distance(a: list[str], b: list[str]) -> int:
  """Levenshtein distance between two symbol lists."""
  row = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    prev, row[0] = row[0], i
    for j, y in enumerate(b, 1):
      prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
  return row[-1]


def heldout_eval(trainer: Seq2SeqTrainer, state: train.TrainState,
                 n_examples: int = 12) -> dict[str, Any]:
  """Greedy decoding of every held-out word by every seed: word accuracy
  (exact match) and phoneme error rate (edit distance / reference length)."""
  d = trainer.task
  decode = jax.jit(jax.vmap(lambda p: seq2seq.greedy_decode(
      p, jnp.asarray(d.heldout.src_BxS), d.tgt_len, cmudict_data.BOS)))
  out_NxBxT = np.asarray(decode(state.params))
  diverged = np.asarray(state.diverged)
  truth = [d.decode_phonemes(t) for t in d.heldout.tgt_out_BxT]
  word_acc, per, examples = [], [], []
  first = runner.first_finite_seed(state)
  for seed in range(out_NxBxT.shape[0]):
    preds = [d.decode_phonemes(t) for t in out_NxBxT[seed]]
    if diverged[seed]:
      word_acc.append(np.nan)
      per.append(np.nan)
      continue
    word_acc.append(np.mean([p == t for p, t in zip(preds, truth)]))
    per.append(sum(edit_distance(p, t) for p, t in zip(preds, truth))
               / sum(len(t) for t in truth))
    if seed == first:
      examples = [{"word": w, "truth": " ".join(t), "predicted": " ".join(p)}
                  for w, t, p in list(zip(d.heldout_words, truth, preds))[:n_examples]]
  return {"decoding": "greedy", "n_words": len(truth), "word_acc": word_acc,
          "phoneme_error_rate": per, "diverged": diverged.tolist(),
          "examples_seed": first, "examples": examples}


def cross_attention_sample(trainer: Seq2SeqTrainer, state: train.TrainState
                           ) -> dict[str, Any]:
  """Cross-attention maps [seeds, L, H, T, S] of the first ``n_samples``
  held-out words (hash order, not chosen by outcome), cropped to each word."""
  d, n = trainer.task, trainer.config.data.n_samples
  src, tgt_in = d.heldout.src_BxS[:n], d.heldout.tgt_in_BxT[:n]

  def maps(p):
    _, trace = seq2seq.forward(p, jnp.asarray(src), jnp.asarray(tgt_in))
    return jnp.stack([tr.weights_BxHxTxS for tr in trace.decoder_cross], 1)

  w_NxBxLxHxTxS = np.asarray(jax.jit(jax.vmap(maps))(state.params))
  words = []
  for b in range(n):
    n_letters = int(np.sum(src[b] != cmudict_data.PAD))
    phones = d.decode_phonemes(d.heldout.tgt_out_BxT[b])
    words.append({
        "word": d.heldout_words[b], "letters": list(d.heldout_words[b]),
        "phonemes": phones + ["<eos>"],
        # rows: decoder positions predicting each phoneme, then <eos>
        "weights_SEEDxLxHxTxS": w_NxBxLxHxTxS[:, b, :, :, :len(phones) + 1, :n_letters],
    })
  return {"first_finite_seed": runner.first_finite_seed(state),
          "diverged": np.asarray(state.diverged).tolist(), "words": words}


# ---- claims and summary (from saved files) ---------------------------------

def _table(rows, key) -> np.ndarray:
  return results.metric_table(rows, key)[1]


def _final(rows, key) -> np.ndarray:
  return _table(rows, key)[:, -1]


def _spectrum(rows, key: str, index: int) -> np.ndarray:
  keys = sorted(k for k in rows[0] if k.startswith(f"sv/{key}/"))
  return np.stack([_table(rows, k)[:, index] for k in keys], 1)


def spectral_distance(rows, block: str, n_layers: int, index: int) -> np.ndarray:
  """Per seed: the largest, over pairs of W_Q, W_K, W_V, mean over layers, of
  mean |s_a - s_b| / mean(s_a, s_b) between their singular-value spectra (as
  in the specialization experiment)."""
  per_layer = []
  for l in range(n_layers):
    s = {n: _spectrum(rows, f"{block}/L{l}/{n}", index) for n in QKV}
    pair = [np.mean(np.abs(s[a] - s[b]), 1) / np.mean((s[a] + s[b]) / 2, 1)
            for a, b in (("query", "key"), ("query", "value"), ("key", "value"))]
    per_layer.append(np.max(pair, 0))
  return np.mean(per_layer, 0)


def best_cross_head(rows, config, index: int) -> tuple[np.ndarray, list[str]]:
  """Per seed: the largest cross-attention monotonicity over layers and heads
  at logging point ``index``, and which head it was."""
  keys = [f"cross_monotonic/L{l}/H{h}" for l in range(config.model.dec_layers)
          for h in range(config.model.n_heads)]
  table = np.stack([_table(rows, k)[:, index] for k in keys], 1)
  filled = np.nan_to_num(table, nan=-np.inf)
  best = np.where(np.all(np.isnan(table), 1), np.nan, np.max(filled, 1))
  return best, [keys[i].split("/", 1)[1] for i in np.argmax(filled, 1)]


def block_layers(config) -> dict[str, int]:
  return {"encoder_self": config.model.enc_layers, "decoder_self": config.model.dec_layers,
          "decoder_cross": config.model.dec_layers}


def evaluate_claims(rows, config, data_info: dict[str, Any]) -> list[dict[str, Any]]:
  """One entry per claim; diverged seeds are NaN and excluded."""
  out = []
  baseline = data_info["majority_share"]
  acc = _final(rows, "heldout/phoneme_acc")
  out.append(stats.claim(
      name="prerequisite: pronunciation of held-out words is learned",
      quote="(not a claim; the other verdicts mean little if the model fails)",
      source="-",
      measured=("held-out phoneme accuracy (teacher-forced) minus always predicting the "
                f"most frequent phoneme ({data_info['majority_phoneme']}, "
                f"{baseline:.3f})"),
      values=acc - baseline, verdict=stats.verdict_greater(acc - baseline)))

  rho_end, where = best_cross_head(rows, config, -1)
  rho_init, _ = best_cross_head(rows, config, 0)
  out.append(stats.claim(
      name="cross-attention learns which input feeds each output (decoder Q finds encoder K)",
      quote=("Cross-Attention: Q comes from one sequence (decoder), K and V come from "
             "another sequence (encoder). Enables cross-sequence interaction."),
      source=ARTICLE_002,
      measured=("held-out words: Spearman rho between phoneme position and the letter it "
                "attends to most, best cross-attention head, end minus step 0; best heads: "
                + ", ".join(sorted(set(where)))),
      values=rho_end - rho_init, verdict=stats.verdict_greater(rho_end - rho_init)))

  threshold = config.claims.monotonic_threshold
  out.append(stats.claim(
      name="the learned letter -> phoneme cross-attention is near-monotonic",
      quote=("plot the learned cross-attention between letters and phonemes on sample "
             "words (expected near-monotonic)"),
      source=ISSUE_3,
      measured=(f"the same Spearman rho at the end (best head); supported if the 95% CI "
                f"lies above {threshold}"),
      values=rho_end, verdict=stats.verdict_greater(rho_end, threshold)))

  for block, n_layers in block_layers(config).items():
    d_init = spectral_distance(rows, block, n_layers, 0)
    d_end = spectral_distance(rows, block, n_layers, -1)
    out.append(stats.claim(
        name=f"W_Q, W_K, W_V differentiate ({BLOCK_TITLES[block]})",
        quote=("the model naturally develops functional differentiation during the "
               "optimization"),
        source=ARTICLE_000,
        measured=("relative L1 distance between the singular-value spectra of the most "
                  "different pair of W_Q, W_K, W_V (mean over layers), end minus step 0"),
        values=d_end - d_init, verdict=stats.verdict_greater(d_end - d_init)))

  for block, n_layers in block_layers(config).items():
    ratio = []
    for l in range(n_layers):
      g = {n: _table(rows, f"grad_norm/{block}/L{l}/{n}")[:, 0] for n in QKV}
      ratio.append(np.log10(g["value"] / np.sqrt(g["query"] * g["key"])))
    ratio = np.mean(ratio, 0)
    out.append(stats.claim(
        name=f"V gets the larger gradient at init ({BLOCK_TITLES[block]})",
        quote=("Gradients for W_V: Come from the final weighted sum ... Gradients for "
               "W_Q: Mainly come from the similarity calculation"),
        source=ARTICLE_000,
        measured=("log10 of grad-norm(W_V) / geometric mean of grad-norms(W_Q, W_K) at "
                  "step 0, mean over layers (> 0: V's is larger)"),
        values=ratio, verdict=stats.verdict_greater(ratio)))
  return out


def summarize(rows, config, data_info, greedy: dict[str, Any] | None) -> dict[str, Any]:
  keys = [k for k in rows[0] if k not in ("step", "seed", "condition")]
  final = {k: {**stats.describe(v), "per_seed": v}
           for k in keys for v in [_final(rows, k)]}
  if greedy is not None:
    for k in ("word_acc", "phoneme_error_rate"):
      v = np.asarray(greedy[k], float)
      final[f"heldout_greedy/{k}"] = {**stats.describe(v), "per_seed": v}
  diverged, div_steps = _final(rows, "diverged"), _final(rows, "diverged_step")
  return {
      "num_seeds": int(len(diverged)),
      "final_step": int(max(r["step"] for r in rows)),
      "conditions": [CONDITION],
      "data": {k: v for k, v in data_info.items() if not k.endswith("_words")},
      "diverged_seeds": [{"seed": int(i), "step": int(div_steps[i])}
                         for i in np.flatnonzero(diverged > 0)],
      "claims": evaluate_claims(rows, config, data_info),
      "final": final,
  }


# ---- figures ----------------------------------------------------------------

def _block_grid(rows, config, prefix, names, ylabel, title, log=False):
  """Rows: encoder self, decoder self, decoder cross; columns: layers."""
  layers = block_layers(config)
  n_cols = max(layers.values())
  fig, axes = plt.subplots(3, n_cols, figsize=(3.2 * n_cols, 7.0), squeeze=False,
                           sharex=True)
  n = 0
  for r, (block, n_layers) in enumerate(layers.items()):
    for l in range(n_cols):
      ax = axes[r][l]
      if l >= n_layers:
        ax.axis("off")
        continue
      for name in names:
        steps, vals = results.metric_table(rows, f"{prefix}/{block}/L{l}/{name}")
        n = plotting.band(ax, steps, vals, plotting.MATRIX_COLORS[name],
                          plotting.MATRIX_LABELS[name], log=log)
      ax.set_title(f"{BLOCK_SHORT[block]}, layer {l}", fontsize=8)
      if l == 0:
        ax.set_ylabel(ylabel)
      if r == 2:
        ax.set_xlabel("step")
  axes[0][0].legend(frameon=False)
  fig.suptitle(title, y=1.0)
  fig.tight_layout()
  plotting.seed_note(fig, n)
  return fig


def spectra_figure(rows, config):
  layers = block_layers(config)
  n_cols = max(layers.values())
  fig, axes = plt.subplots(3, n_cols, figsize=(3.2 * n_cols, 7.0), squeeze=False)
  n = 0
  for r, (block, n_layers) in enumerate(layers.items()):
    for l in range(n_cols):
      ax = axes[r][l]
      if l >= n_layers:
        ax.axis("off")
        continue
      for name in QKV:
        for index, ls, suffix in ((0, "--", " init"), (-1, "-", " end")):
          s = _spectrum(rows, f"{block}/L{l}/{name}", index)
          x = np.arange(1, s.shape[1] + 1)
          mean, std = plotting.nan_mean_std(s)
          ax.plot(x, mean, ls=ls, color=plotting.MATRIX_COLORS[name],
                  label=plotting.MATRIX_LABELS[name] + suffix)
          ax.fill_between(x, mean - std, mean + std, color=plotting.MATRIX_COLORS[name],
                          alpha=0.15, linewidth=0)
          n = int(np.sum(np.isfinite(s[:, 0])))
      ax.set_yscale("log")
      ax.set_title(f"{BLOCK_SHORT[block]}, layer {l}", fontsize=8)
      if r == 2:
        ax.set_xlabel("singular value index")
  axes[0][0].set_ylabel("singular value")
  axes[0][0].legend(frameon=False, fontsize=6, ncol=2)
  fig.suptitle("Spectra of $W_Q, W_K, W_V$ per attention kind: dashed at init, solid at "
               "the end", y=1.0)
  fig.tight_layout()
  plotting.seed_note(fig, n)
  return fig


def loss_figure(rows, data_info):
  fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.7))
  steps, loss = results.metric_table(rows, "loss")
  n = plotting.band(axes[0], steps, loss, "0.4", "train batch", log=True)
  steps, loss_h = results.metric_table(rows, "heldout/loss")
  plotting.band(axes[0], steps, loss_h, "k", "held-out", log=True)
  axes[0].set_ylabel("cross-entropy per label")
  axes[0].legend(frameon=False)
  for key, color, label in (("heldout/phoneme_acc", "k", "phoneme accuracy"),
                            ("heldout/word_acc_tf", "#9467bd", "word accuracy")):
    steps, v = results.metric_table(rows, key)
    plotting.band(axes[1], steps, v, color, label)
  axes[1].axhline(data_info["majority_share"], color="0.5", ls=":", lw=1,
                  label=f"always '{data_info['majority_phoneme']}'")
  axes[1].set_ylim(0, 1.02)
  axes[1].set_ylabel("held-out, teacher-forced")
  axes[1].legend(frameon=False, fontsize=7)
  for ax in axes:
    ax.set_xlabel("step")
  fig.tight_layout()
  plotting.seed_note(fig, n)
  return fig


def monotonicity_figure(rows, config, threshold):
  n_layers, n_heads = config.model.dec_layers, config.model.n_heads
  fig, axes = plt.subplots(1, n_layers + 1, figsize=(3.2 * (n_layers + 1), 2.8),
                           squeeze=False)
  cmap = plt.get_cmap("viridis")
  n = 0
  for l in range(n_layers):
    ax = axes[0][l]
    for h in range(n_heads):
      steps, v = results.metric_table(rows, f"cross_monotonic/L{l}/H{h}")
      n = plotting.band(ax, steps, v, cmap(h / max(1, n_heads - 1)), f"head {h}")
    steps, v = results.metric_table(rows, f"cross_monotonic/L{l}/mean")
    plotting.band(ax, steps, v, "k", "head mean")
    ax.axhline(0, color="0.5", ls=":", lw=1)
    ax.set_ylim(-0.5, 1.02)
    ax.set_title(f"cross-attention, layer {l}")
    ax.set_xlabel("step")
  axes[0][0].set_ylabel("Spearman rho: phoneme position\nvs most-attended letter")
  axes[0][0].legend(frameon=False, fontsize=7)
  ax = axes[0][-1]
  best, where = best_cross_head(rows, config, -1)
  x = np.arange(len(best))
  ax.scatter(x, best, color="k", zorder=3)
  for i, (b, w) in enumerate(zip(best, where)):
    if np.isfinite(b):
      ax.annotate(w, (i, b), fontsize=6, xytext=(2, -8), textcoords="offset points")
  ax.axhline(threshold, color="#d62728", ls="--", lw=1, label=f"threshold {threshold}")
  ax.set_ylim(-0.5, 1.02)
  ax.set_xticks(x)
  ax.set_xlabel("seed")
  ax.set_title("best head at the end, per seed")
  ax.legend(frameon=False, fontsize=7)
  fig.suptitle("Is the learned letter -> phoneme cross-attention monotonic? "
               "(held-out words)", y=1.02)
  fig.tight_layout()
  plotting.seed_note(fig, n)
  return fig


def attention_map_figure(sample: dict[str, Any]):
  """Rows: sample words; columns: cross-attention layer x head, one seed."""
  seed = sample["first_finite_seed"]
  words = sample["words"]
  w0 = np.asarray(words[0]["weights_SEEDxLxHxTxS"])
  n_layers, n_heads = w0.shape[1], w0.shape[2]
  cols = n_layers * n_heads
  fig, axes = plt.subplots(len(words), cols, figsize=(1.7 * cols, 1.9 * len(words) + 0.5),
                           squeeze=False)
  for r, word in enumerate(words):
    w = np.asarray(word["weights_SEEDxLxHxTxS"])[seed]
    t, s = w.shape[-2:]
    for l in range(n_layers):
      for h in range(n_heads):
        ax = axes[r][l * n_heads + h]
        ax.imshow(w[l, h], vmin=0, vmax=1, cmap="Blues", aspect="auto")
        ax.plot(np.argmax(w[l, h], -1), np.arange(t), "o", color="#d62728", ms=2)
        ax.set_xticks(range(s), word["letters"], fontsize=7)
        ax.set_yticks(range(t), word["phonemes"] if l * n_heads + h == 0 else [""] * t,
                      fontsize=6)
        if r == 0:
          ax.set_title(f"L{l} H{h}", fontsize=8)
  fig.suptitle(f"Cross-attention of seed {seed} on held-out words (first {len(words)} in "
               "hash order)\nrows: phoneme being predicted, columns: letters; dot: most-"
               "attended letter", fontsize=8, y=1.0)
  fig.tight_layout()
  return fig


def figures(run_dir: pathlib.Path, rows, config, data_info) -> dict[str, str]:
  figs: dict[str, str] = {}
  figs["Loss and held-out accuracy"] = plotting.save(loss_figure(rows, data_info),
                                                     run_dir, "loss_accuracy")
  figs["Gradient norms of W_Q, W_K, W_V, W_O: self- vs cross-attention"] = plotting.save(
      _block_grid(rows, config, "grad_norm", ("query", "key", "value", "out"),
                  "gradient norm", "Gradient norms per attention kind", log=True),
      run_dir, "grad_norms")
  figs["Relative distance from initialization"] = plotting.save(
      _block_grid(rows, config, "rel_dist_init", ("query", "key", "value", "out"),
                  "||W - W_init|| / ||W_init||", "How far each matrix moved"),
      run_dir, "rel_dist_init")
  figs["Effective rank of W_Q, W_K, W_V"] = plotting.save(
      _block_grid(rows, config, "eff_rank", QKV, "effective rank",
                  "Effective rank (exp entropy of singular values)"), run_dir, "eff_rank")
  figs["Singular-value spectra at initialization and at the end"] = plotting.save(
      spectra_figure(rows, config), run_dir, "spectra")
  figs["Monotonicity of the cross-attention alignment"] = plotting.save(
      monotonicity_figure(rows, config, config.claims.monotonic_threshold), run_dir,
      "cross_monotonicity")
  sample = run_dir / "cross_attention_sample.json"
  if sample.exists():
    figs["Cross-attention between letters and phonemes on sample words"] = plotting.save(
        attention_map_figure(results.read_json(sample)), run_dir, "cross_attention_map")
  return figs


# ---- report -------------------------------------------------------------------

def write_report(run_dir: pathlib.Path, saved, summary, figs, greedy) -> None:
  cfg = saved["config"]
  m, data = cfg["model"], summary["data"]
  lines = [
      "# qkvjax: translation with cross-attention (spelling -> pronunciation)",
      "",
      f"Run `{run_dir.name}`: {cfg['num_seeds']} seeds × {cfg['steps']} steps, batch "
      f"{cfg['batch_size']} words; encoder {m['enc_layers']} + decoder {m['dec_layers']} "
      f"layers, {m['n_heads']} heads, d_model {m['d_model']}, d_head {m['d_head']}; "
      f"optimizer {cfg['optim']['optimizer']} lr {cfg['optim']['learning_rate']}; backend "
      f"{saved['backend']} ({saved['device_kind']}), jax {saved['versions']['jax']}, "
      f"commit {saved['git_commit']}.",
      "",
      f"Data: the CMU Pronouncing Dictionary from the `{data['package']}` package, "
      f"version {data['package_version']} (dictionary sha256 "
      f"`{data['dict_sha256'][:16]}…`, {data['dict_entries']} words); words of "
      f"{data['word_len'][0]}-{data['word_len'][1]} "
      f"letters a-z, {data['pronunciation']}; split by word ({data['split']}): "
      f"{data['n_train']} training words, {data['n_heldout']} held-out words "
      "(lists in `data.json`). Effects are across seeds: mean ± std, 95% percentile-"
      "bootstrap CI of the mean; *supported* when the CI lies on the claimed side, *not "
      "supported* when on the other, *inconclusive* otherwise.",
      "",
  ]
  lines += report.diverged_lines(summary["diverged_seeds"])
  lines += ["## Claims", ""] + report.claims_table(summary["claims"]) + [""]
  lines += ["## Quotes tested", ""]
  lines += report.quote_lines(summary["claims"])
  final = summary["final"]
  lines += ["", "## Held-out accuracy", "", "| metric | mean ± std (95% CI) | seeds |",
            "|---|---|---|"]
  for key, label in (("heldout/phoneme_acc", "phoneme accuracy (teacher-forced)"),
                     ("heldout_greedy/word_acc", "word accuracy (greedy decoding, exact "
                                                 "match; equals teacher-forced "
                                                 "all-labels-right by construction)"),
                     ("heldout_greedy/phoneme_error_rate", "phoneme error rate (greedy; "
                                                           "edit distance / length)"),
                     ("heldout/loss", "held-out cross-entropy")):
    if key in final:
      lines.append(f"| {label} | {report.effect_cell(final[key])} | {final[key]['n']} |")
  if greedy and greedy["examples"]:
    lines += ["", f"Greedy outputs of seed {greedy['examples_seed']} on the first held-out "
              "words:", "", "| word | CMU dict | predicted |", "|---|---|---|"]
    lines += [f"| {e['word']} | {e['truth']} | {e['predicted']} |"
              for e in greedy["examples"]]
  lines += ["", "## Figures", ""]
  lines += report.figure_lines(figs)
  lines += report.redraw_lines(run_dir)
  results.write_atomic(run_dir / "report.md", "\n".join(lines))


# ---- entry points -------------------------------------------------------------

def _reject(path: str, value, accepted: str):
  raise config_lib.ConfigError(
      f"config.{path}={value!r} is out of range; accepted: {accepted}")


def check(config, results_dir) -> None:
  """ConfigError (one line) for any bad value, or a missing ``cmudict``."""
  config_lib.validate_common(config)
  config_lib.require_at_least(config, [f"model.{f}" for f in (
      "d_model", "n_heads", "d_head", "enc_layers", "dec_layers", "d_mlp")])
  from qkvjax import model as model_lib  # pylint: disable=g-import-not-at-top
  config_lib.require_choice(config, "model.qkv_init", tuple(model_lib.QKV_INITIALIZERS))
  if not config.model.qkv_init_scale > 0:
    _reject("model.qkv_init_scale", config.model.qkv_init_scale, "a number > 0")
  config_lib.validate_optim(config.optim)
  d = config.data
  config_lib.require_at_least(config, ("data.min_word_len", "data.n_train",
                                       "data.n_heldout", "data.n_samples"))
  if not d.min_word_len <= d.max_word_len <= 30:
    _reject("data.max_word_len", d.max_word_len,
            f"data.min_word_len ({d.min_word_len})..30")
  if not 0 < d.heldout_fraction < 1:
    _reject("data.heldout_fraction", d.heldout_fraction, "0 < value < 1")
  if d.n_samples > d.n_heldout:
    _reject("data.n_samples", d.n_samples, f"1..data.n_heldout ({d.n_heldout})")
  if not -1 <= config.claims.monotonic_threshold < 1:
    _reject("claims.monotonic_threshold", config.claims.monotonic_threshold,
            "-1 <= value < 1")
  load_data(d)  # ConfigError if cmudict is missing or too few words qualify
  results.check_writable(results_dir)



def run(config, results_dir, progress: bool = True) -> pathlib.Path:
  """Trains every seed, then writes config, data, metrics, evaluations,
  summary, figures and report."""
  data = load_data(config.data)
  trainer = train.make_trainer(config, task=data, trainer_class=Seq2SeqTrainer)
  majority, share = majority_baseline(data)
  data_info = {**data.info, "majority_phoneme": majority, "majority_share": share}
  run_dir = runner.start_run(results_dir, EXP, config, trainer.mesh, data=data.info)
  results.write_json(run_dir / "data.json", {
      **data_info, "train_words": list(data.train_words),
      "heldout_words": list(data.heldout_words)})
  writer = results.MetricsWriter(run_dir / "metrics.jsonl")
  try:
    state = runner.train_and_log(trainer, writer, progress, fields={"condition": CONDITION},
                                 desc=f"translation, {config.num_seeds} seeds")
  finally:
    writer.close()
  results.write_json(run_dir / "heldout_eval.json", heldout_eval(trainer, state))
  results.write_json(run_dir / "cross_attention_sample.json",
                     cross_attention_sample(trainer, state))
  finish(run_dir)
  return run_dir


def finish(run_dir) -> None:
  """Summary, figures and report from the saved files alone."""
  run_dir = pathlib.Path(run_dir)
  saved, config, rows = results.load_run(run_dir)
  data_info = results.read_json(run_dir / "data.json")
  greedy_path = run_dir / "heldout_eval.json"
  greedy = results.read_json(greedy_path) if greedy_path.exists() else None
  summary = summarize(rows, config, data_info, greedy)
  results.write_json(run_dir / "summary.json", summary)
  figs = figures(run_dir, rows, config, data_info)
  write_report(run_dir, saved, summary, figs, greedy)

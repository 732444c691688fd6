"""Translation with cross-attention: spelling -> pronunciation on real data.

The articles' own example is translation, where the decoder's queries look up
the encoder's keys and values. An encoder-decoder learns English spelling ->
ARPAbet pronunciation (``qkvjax.tasks.spelling``); self- and cross-attention
sites are measured apart, with the letter -> phoneme alignment.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qkvjax import config as config_lib
from qkvjax import effects
from qkvjax import metrics
from qkvjax import models
from qkvjax import plotting
from qkvjax import report
from qkvjax import stats
from qkvjax import study
from qkvjax import train
from qkvjax.study import Claim, Figure
from qkvjax.tasks.spelling import BOS

plt = plotting.plt
QKV = plotting.QKV
CONDITION = "cmudict_g2p"
CROSS = "decoder/L{}/cross_attn"
KINDS = {"encoder/L{}/self_attn": "encoder self-attention",  # site pattern: title
         "decoder/L{}/self_attn": "decoder causal self-attention",
         CROSS: "decoder cross-attention (Q: decoder, K, V: encoder)"}


def model_fn(cfg, task, rngs):
  return models.EncoderDecoder(cfg.model, task.src_vocab_size, task.vocab_size, task.src_len,
                               task.tgt_len, rngs=rngs)


def sites(config, kinds=KINDS) -> list[str]:
  """Attention sites of the given kinds, layer by layer."""
  m = config.model
  return [k.format(l) for k in kinds
          for l in range(m.enc_layers if k.startswith("encoder") else m.dec_layers)]


# ---- metrics (inside the jitted, run-vmapped measurement) ---------------------------
def heldout_metrics(m: train.Measurement) -> dict[str, jax.Array]:
  """Teacher-forced on every held-out word: loss, phoneme and word accuracy;
  per cross-attention site and head (and head mean), how monotonic the
  letter -> phoneme alignment is, and the attention entropy."""
  held = jax.tree.map(jnp.asarray, m.task.heldout)
  loss, task_metrics, cap = m.forward(held)
  out = {"heldout/loss": loss, **{f"heldout/{k}": v for k, v in task_metrics.items()}}
  for site in sites(m.config, [CROSS]):
    w_BxHxTxS = cap.attention[site].weights_BxHxTxS
    for h, w_BxTxS in [*enumerate(jnp.moveaxis(w_BxHxTxS, 1, 0)), ("mean", w_BxHxTxS.mean(1))]:
      head = h if h == "mean" else f"H{h}"
      out[f"cross_monotonic/{site}/{head}"], out[f"cross_entropy/{site}/{head}"] = (
          m.task.alignment(w_BxTxS, held))
  return out


def heldout_samples(trainer, state, conditions, n_examples: int = 12) -> dict:
  """After training: greedy decoding of every held-out word by every seed
  (word accuracy, phoneme error rate, the first finite seed's outputs on the
  first words), and that seed's cross-attention on the first
  ``data.n_samples`` held-out words (hash order, not chosen by outcome)."""
  task, cfg, held = trainer.task, trainer.config, jax.tree.map(jnp.asarray, trainer.task.heldout)
  decode = jax.jit(jax.vmap(lambda p, r: study.nnx_merge(trainer, p, r).greedy_decode(
      held.src_BxS, task.tgt_len, BOS)))
  out_RxNxT = np.asarray(decode(state.params, state.model_rest))[:cfg.num_seeds]
  scores = [(None, None, []) if bad else task.score(out_NxT)
            for out_NxT, bad in zip(out_RxNxT, np.asarray(state.diverged))]
  seed, n = train.first_finite_run(state, list(range(cfg.num_seeds))), cfg.data.n_samples
  _, cap = models.apply(study.run_model(trainer, state, seed), held.src_BxS[:n],
                        held.tgt_in_BxT[:n])
  truth = [task.decode_phonemes(t) for t in task.heldout.tgt_out_BxT]
  words = [{"word": w, "letters": list(w), "phonemes": truth[b] + ["<eos>"],
            # rows: decoder positions predicting each phoneme, then <eos>
            "weights_LxHxTxS": np.stack([cap.attention[site].weights_BxHxTxS[
                b, :, :len(truth[b]) + 1, :len(w)] for site in sites(cfg, [CROSS])])}
           for b, w in enumerate(task.heldout_words[:n])]
  return {conditions[0]: {
      "seed": seed, "word_acc": [s[0] for s in scores], "words": words,
      "phoneme_error_rate": [s[1] for s in scores],
      "examples": [{"word": w, "truth": " ".join(t), "predicted": " ".join(p)} for w, t, p in
                   zip(task.heldout_words, truth, scores[seed][2][:n_examples])]}}


# ---- claims (from the saved run) ----------------------------------------------------
def best_cross_head(run, index: int) -> tuple[np.ndarray, list[str]]:
  """Per seed: the largest cross-attention monotonicity over layers and heads
  at a logging point, and which head it was (``L<l>/H<h>``)."""
  keys = [k for k in run.keys("cross_monotonic/") if not k.endswith("/mean")]
  best, which = effects.best_over(run, keys, index)
  return best, ["{2}/{4}".format(*k.split("/")) if k else "none" for k in which]


def claims(run) -> list[Claim]:
  info, threshold = run.file("task.json")["spelling"], run.config.claims.monotonic_threshold
  where = sorted(set(best_cross_head(run, -1)[1]))  # the best heads, named in the claim
  out = [
      Claim("prerequisite: pronunciation of held-out words is learned",
            "(not a claim; the other verdicts mean little if the model fails)", "qkvjax",
            "held-out phoneme accuracy (teacher-forced) minus always predicting the most "
            f"frequent phoneme ({info['majority_phoneme']}, {info['majority_share']:.3f}); "
            "smallest effect of interest 0.05",
            lambda r: r.final("heldout/accuracy") - info["majority_share"],
            stats.Greater(0.0, 0.05)),
      Claim("cross-attention learns which input feeds each output (decoder Q finds encoder K)",
            "Cross-Attention: Q comes from one sequence (decoder), K and V come from another "
            "sequence (encoder). Enables cross-sequence interaction.", "qkv_mechanism",
            "held-out words: Spearman rho between phoneme position and the letter it attends "
            "to most, best cross-attention head, end minus step 0 (best heads: "
            f"{', '.join(where)}); smallest effect of interest 0.1 in rho",
            lambda r: best_cross_head(r, -1)[0] - best_cross_head(r, 0)[0],
            stats.Greater(0.0, 0.1)),
      Claim("the learned letter -> phoneme cross-attention is near-monotonic",
            "plot the learned cross-attention between letters and phonemes on sample words "
            "(expected near-monotonic)", "qkvjax",
            f"the same Spearman rho at the end (best head); threshold "
            f"claims.monotonic_threshold ({threshold}), smallest effect of interest 0.1 "
            "beyond it", lambda r: best_cross_head(r, -1)[0],
            stats.Greater(threshold, 0.1))]
  kinds = [(title, sites(run.config, [kind])) for kind, title in KINDS.items()]
  out += [Claim(
      f"W_Q, W_K, W_V differentiate ({title})",
      "the model naturally develops functional differentiation during the optimization",
      "division_of_labor",
      "relative L1 distance between the singular-value spectra of the most different pair of "
      "W_Q, W_K, W_V (mean over layers), end minus step 0; smallest effect of interest 0.03, "
      "the distance three independent random draws already have",
      lambda r, s=s: (effects.spectral_distance(r, s, -1)
                      - effects.spectral_distance(r, s, 0)),
      stats.Greater(0.0, 0.03)) for title, s in kinds]
  out += [Claim(
      f"V gets the larger gradient at init ({title})",
      "Gradients for W_V: Come from the final weighted sum ... Gradients for W_Q: Mainly "
      "come from the similarity calculation", "division_of_labor",
      "log10 of grad-norm(W_V) / geometric mean of grad-norms(W_Q, W_K) at step 0, mean over "
      "layers (> 0: V's is larger); smallest effect of interest 0.1 (x1.26)",
      lambda r, s=s: effects.grad_ratio(r, s), stats.Greater(0.0, 0.1)) for title, s in kinds]
  return out


def greedy_summary(run) -> dict:
  """The data's provenance, and greedy-decoding scores per seed."""
  info = run.file("task.json")["spelling"]
  greedy = (run.file("samples.json") or {}).get(CONDITION, {})
  return {"data": {k: v for k, v in info.items() if not k.endswith("_words")},
          "heldout_greedy": {k: {**stats.describe(np.asarray(greedy[k], float)),
                                 "per_seed": greedy[k]}
                             for k in ("word_acc", "phoneme_error_rate") if k in greedy}}


# ---- figures (from the saved run) ---------------------------------------------------
def loss_figure(run):
  info = run.file("task.json")["spelling"]
  fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.7))
  steps, loss = run.table("loss")
  n = plotting.band(axes[0], steps, loss, "0.4", "train batch", log=True)
  plotting.band(axes[0], steps, run.table("heldout/loss")[1], "k", "held-out", log=True)
  for key, color, label in (("accuracy", "k", "phoneme"), ("word_acc_tf", "#9467bd", "word")):
    plotting.band(axes[1], steps, run.table(f"heldout/{key}")[1], color, f"{label} accuracy")
  axes[1].axhline(info["majority_share"], color="0.5", ls=":", lw=1,
                  label=f"always '{info['majority_phoneme']}'")
  axes[0].set(xlabel="step", ylabel="cross-entropy per label")
  axes[1].set(xlabel="step", ylabel="held-out, teacher-forced", ylim=(0, 1.02))
  for ax in axes:
    ax.legend(frameon=False, fontsize=7)
  fig.tight_layout()
  plotting.seed_note(fig, n)
  return fig


def monotonicity_figure(run):
  """Per cross-attention site, each head's alignment monotonicity over
  training; last panel, each seed's best head at the end, named."""
  cross, n_heads, cmap = sites(run.config, [CROSS]), run.config.model.n_heads, plt.cm.viridis
  threshold, (best, where) = run.config.claims.monotonic_threshold, best_cross_head(run, -1)
  fig, axes = plt.subplots(1, len(cross) + 1, figsize=(3.2 * (len(cross) + 1), 2.8))
  for ax, site in zip(axes, cross):
    for h in range(n_heads):
      steps, v = run.table(f"cross_monotonic/{site}/H{h}")
      n = plotting.band(ax, steps, v, cmap(h / max(1, n_heads - 1)), f"head {h}")
    plotting.band(ax, steps, run.table(f"cross_monotonic/{site}/mean")[1], "k", "head mean")
    ax.axhline(0, color="0.5", ls=":", lw=1)
    ax.set(ylim=(-0.5, 1.02), title=site, xlabel="step")
  axes[0].set_ylabel("Spearman rho: phoneme position\nvs most-attended letter")
  axes[0].legend(frameon=False, fontsize=7)
  axes[-1].scatter(np.arange(len(best)), best, color="k", zorder=3)
  axes[-1].axhline(threshold, color="#d62728", ls="--", lw=1, label=f"threshold {threshold}")
  axes[-1].set_xticks(range(len(best)), [f"{i}\n{w}" for i, w in enumerate(where)], fontsize=6)
  axes[-1].set(ylim=(-0.5, 1.02), xlabel="seed, best head", title="best head at the end")
  axes[-1].legend(frameon=False, fontsize=7)
  fig.suptitle("Is the learned letter -> phoneme cross-attention monotonic? (held-out words)",
               y=1.02)
  fig.tight_layout()
  plotting.seed_note(fig, n)
  return fig


def attention_map_figure(sample):
  """Rows: sample words; columns: cross-attention layer x head, one seed."""
  words = sample["words"]
  n_layers, n_heads = np.asarray(words[0]["weights_LxHxTxS"]).shape[:2]
  fig, axes = plt.subplots(len(words), n_layers * n_heads, squeeze=False,
                           figsize=(1.7 * n_layers * n_heads, 1.9 * len(words) + 0.5))
  for row, word in zip(axes, words):
    w_LxHxTxS = np.asarray(word["weights_LxHxTxS"])
    for l in range(n_layers):
      cols = row[l * n_heads:(l + 1) * n_heads]
      plotting.attention_maps(w_LxHxTxS[l], word["phonemes"], word["letters"], cols,
                              [f"L{l} H{h}" for h in range(n_heads)])
      for ax, w_TxS in zip(cols, w_LxHxTxS[l]):
        ax.set_aspect("auto")
        ax.plot(np.argmax(w_TxS, -1), np.arange(len(w_TxS)), "o", color="#d62728", ms=2)
  fig.suptitle(f"Cross-attention of seed {sample['seed']} on held-out words (first "
               f"{len(words)} in hash order)\nrows: phoneme being predicted, columns: "
               "letters; dot: most-attended letter", fontsize=8, y=1.0)
  fig.tight_layout()
  return fig


def figures(run) -> list[Figure]:
  def matrices(prefix, names, ylabel, title, log=False):
    return lambda r: plotting.per_site_matrices(r, prefix, sites(r.config), names, ylabel,
                                                title, log)
  sample = (run.file("samples.json") or {}).get(CONDITION)
  qkvo = QKV + ("out",)
  return [
      Figure("Loss and held-out accuracy", "loss_accuracy", loss_figure),
      Figure("Gradient norms of W_Q, W_K, W_V, W_O: self- vs cross-attention", "grad_norms",
             matrices("grad_norm", qkvo, "gradient norm", "Gradient norms per attention "
                      "site", log=True)),
      Figure("Relative distance from initialization", "rel_dist_init", matrices(
          "rel_dist_init", qkvo, "||W - W_init|| / ||W_init||", "How far each matrix moved")),
      Figure("Effective rank of W_Q, W_K, W_V", "eff_rank", matrices(
          "eff_rank", QKV, "effective rank", "Effective rank (exp entropy of singular values)")),
      Figure("Singular-value spectra at initialization and at the end", "spectra",
             lambda r: plotting.spectra_figure(r, sites(r.config))),
      Figure("Monotonicity of the cross-attention alignment", "cross_monotonicity",
             monotonicity_figure),
      *([Figure("Cross-attention between letters and phonemes on sample words",
                "cross_attention_map", lambda r: attention_map_figure(sample))]
        if sample else [])]


# ---- report ---------------------------------------------------------------------------
def describe(run) -> str:
  d, m = run.file("task.json")["spelling"], run.config.model
  return (
      f"Data: the CMU Pronouncing Dictionary from the `{d['package']}` package, version "
      f"{d['package_version']} (dictionary sha256 `{d['dict_sha256'][:16]}…`, "
      f"{d['dict_entries']} words); words of {d['word_len'][0]}-{d['word_len'][1]} letters "
      f"a-z, {d['pronunciation']}; split by word ({d['split']}): {d['n_train']} training, "
      f"{d['n_heldout']} held-out words (lists in `task.json`). Model: encoder "
      f"{m.enc_layers} + decoder {m.dec_layers} layers, {m.n_heads} heads of {m.d_head}.")


def sections(run, summary) -> list[str]:
  """Held-out accuracy (teacher-forced and greedy) and greedy outputs."""
  final, greedy = summary["final"][CONDITION], summary["heldout_greedy"]
  rows = ((final, "heldout/accuracy", "phoneme accuracy (teacher-forced)"),
          (greedy, "word_acc", "word accuracy (greedy decoding, exact match; equals "
                               "teacher-forced all-labels-right by construction)"),
          (greedy, "phoneme_error_rate", "phoneme error rate (greedy; edit distance / length)"),
          (final, "heldout/loss", "held-out cross-entropy"))
  lines = ["## Held-out accuracy", "", *report.table(
      ["metric", "mean ± std (95% CI)", "seeds"],
      [[label, report.effect_cell(d[k]), d[k]["n"]] for d, k, label in rows if k in d])]
  sample = (run.file("samples.json") or {}).get(CONDITION)
  if sample and sample["examples"]:
    lines += ["", f"Greedy outputs of seed {sample['seed']} on the first held-out words:", "",
              *report.table(["word", "CMU dict", "predicted"],
                            [[e["word"], e["truth"], e["predicted"]]
                             for e in sample["examples"]])]
  return lines + [""]


def validate(c) -> None:
  config_lib.validate_common(c)
  models.validate_model(c.model)
  config_lib.require_at_least(c, ("model.enc_layers", "model.dec_layers", "data.n_samples"))
  config_lib.require(c.data.n_samples <= c.data.n_heldout, "data.n_samples", c.data.n_samples,
                     f"1..data.n_heldout ({c.data.n_heldout})")
  t = c.claims.monotonic_threshold
  config_lib.require(-1 <= t < 1, "claims.monotonic_threshold", t, "-1 <= value < 1")


STUDY = study.Study(
    name="translation",
    title="qkvjax: translation with cross-attention (spelling -> pronunciation)",
    task="spelling", conditions=lambda c: {CONDITION: {}},
    metrics=(metrics.weight_norms, metrics.spectra, heldout_metrics), claims=claims,
    figures=figures, describe=describe, validate=validate, model_fn=model_fn,
    samples=heldout_samples, sections=sections, summary=greedy_summary)

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

from qkvjax import claim_kinds
from qkvjax import config as config_lib
from qkvjax import effects
from qkvjax import figure_kinds
from qkvjax import metrics
from qkvjax import models
from qkvjax import plotting
from qkvjax import report
from qkvjax import sample_kinds
from qkvjax import stats
from qkvjax import study
from qkvjax.figure_kinds import Line, Panel, Ref
from qkvjax.models import encoder_decoder
from qkvjax.study import Claim, Figure
from qkvjax.tasks import spelling
from qkvjax.tasks.spelling import BOS

CONDITION = "cmudict_g2p"
KINDS = {encoder_decoder.ENCODER_SELF: "encoder self-attention",  # site pattern: title
         encoder_decoder.DECODER_SELF: "decoder causal self-attention",
         encoder_decoder.CROSS: "decoder cross-attention (Q: decoder, K, V: encoder)"}


# ---- samples (after training) -------------------------------------------------------
def heldout_samples(trainer, state, conditions, n_examples: int = 12) -> dict:
  """After training: greedy decoding of every held-out word by every seed
  (word accuracy, phoneme error rate, the first finite seed's outputs on the
  first words), and that seed's cross-attention on the first
  ``data.n_samples`` held-out words (hash order, not chosen by outcome)."""
  task, cfg, held = trainer.task, trainer.config, jax.tree.map(jnp.asarray, trainer.task.heldout)
  seed, n = sample_kinds.first_seed(trainer, state), cfg.data.n_samples
  return {conditions[0]: task.greedy_sample(
      sample_kinds.greedy_outputs(trainer, state, held.src_BxS, task.tgt_len, BOS),
      state.diverged, seed, sample_kinds.attention_weights(
          trainer, state, seed, encoder_decoder.sites(cfg.model, [encoder_decoder.CROSS]),
          held.src_BxS[:n], held.tgt_in_BxT[:n]),
      n_examples)}


# ---- claims (from the saved run) ----------------------------------------------------
def best_cross_head(run, index: int) -> tuple[np.ndarray, list[str]]:
  """Per seed, the most monotonic cross-attention head at a logging point, and which."""
  return effects.best_head(run, "cross_monotonic/", index)


def claims(run) -> list[Claim]:
  info, threshold = run.file("task.json")["spelling"], run.config.claims.monotonic_threshold
  where = sorted(set(best_cross_head(run, -1)[1]))  # the best heads, named in the claim
  out = [
      claim_kinds.prerequisite(
          "pronunciation of held-out words is learned",
          "held-out phoneme accuracy (teacher-forced) minus always predicting the most "
          f"frequent phoneme ({info['majority_phoneme']}, {info['majority_share']:.3f}); "
          "smallest effect of interest 0.05",
          claim_kinds.final_above("heldout/accuracy", info["majority_share"])),
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
  kinds = [(title, encoder_decoder.sites(run.config.model, [kind]))
           for kind, title in KINDS.items()]
  out += [claim_kinds.differentiation(s, f"W_Q, W_K, W_V differentiate ({title})")
          for title, s in kinds]
  return out + [claim_kinds.v_gradient(
      f"V gets the larger gradient at init ({title})", claim_kinds.GRADIENT_MEASURED
      + " (> 0: V's is larger); smallest effect of interest 0.1 (x1.26)", s)
                for title, s in kinds]


def greedy_summary(run) -> dict:
  """The data's provenance, and greedy-decoding scores per seed."""
  info = run.file("task.json")["spelling"]
  greedy = (run.file("samples.json") or {}).get(CONDITION, {})
  return {"data": {k: v for k, v in info.items() if not k.endswith("_words")},
          "heldout_greedy": {k: effects.seeds_summary(greedy[k])
                             for k in ("word_acc", "phoneme_error_rate") if k in greedy}}


# ---- figures (from the saved run) ---------------------------------------------------
def loss_accuracy(run) -> list[list[Panel]]:
  info = run.file("task.json")["spelling"]
  return [[Panel([Line("loss", "0.4", "train batch"), Line("heldout/loss", "k", "held-out")],
                 "cross-entropy per label", log=True, legend="best"),
           Panel([Line("heldout/accuracy", "k", "phoneme accuracy"),
                  Line("heldout/word_acc_tf", "#9467bd", "word accuracy")],
                 "held-out, teacher-forced", ylim=(0, 1.02), legend="best",
                 refs=[Ref(info["majority_share"], f"always '{info['majority_phoneme']}'")])]]


def monotonicity_figure(run):
  """Per cross-attention site, each head's alignment monotonicity over
  training; last panel, each seed's best head at the end, named."""
  threshold, (best, where) = run.config.claims.monotonic_threshold, best_cross_head(run, -1)
  cross = encoder_decoder.sites(run.config.model, [encoder_decoder.CROSS])
  fig = figure_kinds.draw_panels(run, [[Panel(
      figure_kinds.head_lines(f"cross_monotonic/{site}", run.config.model.n_heads),
      "Spearman rho: phoneme position\nvs most-attended letter" if i == 0 else "", site,
      ylim=(-0.5, 1.02), refs=[Ref(0)], legend="best" if i == 0 else None)
      for i, site in enumerate(cross)] + [None]], height=2.8, suptitle="Is the learned letter "
      "-> phoneme cross-attention monotonic? (held-out words)")
  fig.axes[-1].axis("on")
  plotting.named_dots(fig.axes[-1], best, where, threshold, f"threshold {threshold}",
                      ylim=(-0.5, 1.02), xlabel="seed, best head", title="best head at the end")
  fig.tight_layout()
  return fig


def figures(run) -> list[Figure]:
  sample = (run.file("samples.json") or {}).get(CONDITION)
  on_sites = lambda r: encoder_decoder.sites(r.config.model)
  return [
      figure_kinds.curves("Loss and held-out accuracy", "loss_accuracy", loss_accuracy,
                          width=3.5, height=2.7),
      figure_kinds.site_curves(
          "Gradient norms of W_Q, W_K, W_V, W_O: self- vs cross-attention", "grad_norms",
          "grad_norm", plotting.QKV + ("out",), "gradient norm",
          "Gradient norms per attention site", log=True, sites=on_sites),
      figure_kinds.rel_dist_init(on_sites),
      figure_kinds.eff_rank(on_sites),
      figure_kinds.spectra(on_sites),
      Figure("Monotonicity of the cross-attention alignment", "cross_monotonicity",
             monotonicity_figure),
      *([Figure("Cross-attention between letters and phonemes on sample words",
                "cross_attention_map", lambda r: plotting.alignment_grid(
                    sample["words"], "phonemes", "letters",
                    f"Cross-attention of seed {sample['seed']} on held-out words (first "
                    f"{len(sample['words'])} in hash order)\nrows: phoneme being predicted, "
                    "columns: letters; dot: most-attended letter"))] if sample else [])]


# ---- report ---------------------------------------------------------------------------
def describe(run) -> str:
  m = run.config.model
  return (f"{spelling.provenance(run.file('task.json')['spelling'])} Model: encoder "
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
    metrics=(metrics.weight_norms, metrics.spectra, metrics.heldout_alignment),
    claims=claims, figures=figures, describe=describe, validate=validate,
    model_fn=encoder_decoder.for_task, samples=heldout_samples, sections=sections,
    summary=greedy_summary)

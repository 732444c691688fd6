"""Are Q, K, V recomputed for every context while W_Q, W_K, W_V stay fixed?

"apple" is a fruit or a company, "so the Q, K, and V vectors for 'apple'
will be different depending on its surrounding words". On the context task,
each layer's q, k, v of the ambiguous word are measured on a fixed probe set.
"""

from __future__ import annotations

import jax
import numpy as np

from qkvjax import claim_kinds
from qkvjax import config as config_lib
from qkvjax import effects
from qkvjax import figure_kinds
from qkvjax import metrics
from qkvjax import plotting
from qkvjax import report
from qkvjax import sample_kinds
from qkvjax import stats
from qkvjax import study
from qkvjax.figure_kinds import Line, Panel, Ref
from qkvjax.metrics.context import REPS
from qkvjax.study import Claim, Figure
from qkvjax.tasks.context import CHANCE

QKV = plotting.QKV
REP_COLORS = {**plotting.MATRIX_COLORS, "resid": "0.45"}
REP_LABELS = {"query": "q", "key": "k", "value": "v", "resid": "layer input"}


# ---- samples (after training) -------------------------------------------------------
def vectors_sample(trainer, state, conditions, n_contexts: int = 64) -> dict:
  """For the figures: 2-D PCA coordinates (over the vectors' RMS norm) of the
  first word's q, k, v at the last position in ``n_contexts`` contexts of
  each sense, per layer, from the first finite seed's final parameters."""
  task, cfg = trainer.task, trainer.config
  run = sample_kinds.first_seed(trainer, state)
  batch = task.contrast_set(jax.random.PRNGKey(10_000 + cfg.seed), n_contexts)
  return {conditions[0]: {"seed": run, "word": task.words[0], "position": task.seq_len - 1,
                          "sense": np.asarray(batch.sense_B), "senses": ["nature", "tech"],
                          "coords": sample_kinds.qkv_pca(trainer, state, run,
                                                         batch.tokens_BxT)}}


# ---- claims (from the saved run) ----------------------------------------------------
def claims(run) -> list[Claim]:
  p, n_layers = run.config.probe, run.config.model.n_layers
  floor = 1 / (2 * p.replicates - 1)  # the sense share of vectors blind to the sense
  qkv_min = lambda r, prefix, l, index: effects.qkv_min(r, prefix, f"L{l}", index)
  per_layer = [  # name, quote, measured, effect (run, layer -> per seed), rule, first layer
      ("the ambiguous word's q, k, v differ between contexts",
       "the Q, K, and V vectors for “apple” will be different depending on its surrounding "
       "words", "smallest over q, k, v of the RMS distance between the word's vectors in two "
       "contexts (same word, same position) over their RMS norm, at the end; threshold "
       "probe.spread_margin, smallest effect of interest 0.05 beyond it (a twentieth of the "
       "norm)", lambda r, l: qkv_min(r, "ctx_spread", l, -1),
       stats.Greater(p.spread_margin, 0.05), 0),
      ("the sense (fruit or company) is readable from q, k, v",
       "“apple”’s K will help determine this relevance, and its V will carry the specific "
       "information (either about the fruit or the company)",
       f"smallest over q, k, v of a ridge probe's held-out sense accuracy minus {CHANCE}, at "
       "the end; threshold probe.acc_margin, smallest effect of interest 0.05 beyond it "
       "(one more context in twenty read right)",
       lambda r, l: qkv_min(r, "probe_acc", l, -1) - CHANCE,
       stats.Greater(p.acc_margin, 0.05), 0),
      ("training makes the context-dependence of q, k, v sense-specific",
       "the Q and K vectors will be different each time, depending on whether “apple” is "
       "referring to a fruit or a tech company",
       "smallest over q, k, v of the sense share of their context variation (between-sense "
       f"/ within-group variance), end minus step 0; smallest effect of interest {floor:.3g}, "
       "the share sampling alone gives vectors blind to the sense",
       lambda r, l: qkv_min(r, "sense_share", l, -1) - qkv_min(r, "sense_share", l, 0),
       stats.Greater(0.0, floor), 1)]
  return [claim_kinds.prerequisite(
      "the sense is resolved from context",
      f"final accuracy on the probe set minus {CHANCE} (the best accuracy from the word and "
      "its position alone); smallest effect of interest probe.acc_margin",
      claim_kinds.final_above("probe_set_accuracy", CHANCE), p.acc_margin)] + [
          Claim(f"layer {l + 1}: {name}", quote, "qkv_in_transformers", measured,
                lambda r, l=l, effect=effect: effect(r, l), rule)
          for name, quote, measured, effect, rule, first in per_layer
          for l in range(first, n_layers)]


# ---- figures (from the saved run) ---------------------------------------------------
CURVES = {  # metric: file, report title, y label, figure title, chance line
    "ctx_spread": ("context_spread", "Spread of the ambiguous word's vectors across contexts",
                   "spread across contexts\n(RMS distance / RMS norm)", "How much the "
                   "ambiguous word's vectors change with context (same word, same position)",
                   None),
    "sense_share": ("sense_share", "Share of the context variation that separates the senses",
                    "sense share of that spread\n(between-sense / within-group var.)",
                    "How much of that change is the sense", None),
    "probe_acc": ("sense_probe", "Linear probe for the sense", "held-out probe accuracy\n"
                  "for the sense", "Ridge probe for the sense (fruit vs company), held-out "
                  "contexts", CHANCE)}


def against_layer(run) -> list[list[Panel]]:
  """Headline: each metric against layer, at step 0 (dashed) and at the end."""
  return [[figure_kinds.layer_profile(
      run, p, REPS, REP_COLORS, REP_LABELS, ylabel, [] if chance is None else [Ref(chance)],
      "right" if p == "probe_acc" else None) for p, (_, _, ylabel, _, chance) in CURVES.items()]]


def cue_attention(run) -> list[Panel]:
  lines = figure_kinds.layer_heads(run, "attn_cues", "most cue-seeking head")
  return [Panel(lines + [Line("attn_cues_uniform", "0.5", "uniform", ls=":")],
                "attention from the ambiguous\nword onto cue words", ylim=(0, 1), legend="right")]


def loss_accuracy(run) -> list[list[Panel]]:
  del run
  return [[Panel([Line("loss", "k", "loss (training batch)")], "cross-entropy", log=True),
           Panel([Line("accuracy", "k", "training batch"),
                  Line("probe_set_accuracy", "#9467bd", "probe set")], "accuracy of the sense",
                 ylim=(0, 1.02), refs=[Ref(CHANCE, "word + position only")], legend="best")]]


def figures(run) -> list[Figure]:
  sample = (run.file("samples.json") or {}).get("trained")
  titles = {f"L{l}": f"layer {l + 1}" + (" (sees token + position only)" if l == 0 else "")
            for l in range(run.config.model.n_layers)}
  return [figure_kinds.curves(
      "Spread, sense share and probe accuracy against layer", "context_layers", against_layer,
      suptitle="The ambiguous word's q, k, v across contexts, layer by layer (dashed: step "
      "0, solid: end)", height=2.8),
          *[figure_kinds.site_curves(
              title, name, prefix, REPS, ylabel, suptitle, colors=REP_COLORS,
              labels=REP_LABELS, titles=titles, hline=chance,
              ylim=None if chance is None else (0.4, 1.02))
            for prefix, (name, title, ylabel, suptitle, chance) in CURVES.items()],
          figure_kinds.curves("Attention from the ambiguous word onto cue words",
                              "attention_cues", cue_attention, width=5.0, height=2.8),
          figure_kinds.curves("Loss and accuracy", "loss_accuracy", loss_accuracy),
          *([Figure("One word's q, k, v in many contexts", "vectors_pca", lambda r: (
              plotting.pca_grid(  # rows q, k, v; columns layers; one seed, both senses
                  sample["coords"], {n: f"{REP_LABELS[n]}: PC2 / RMS norm" for n in QKV},
                  {f"L{l}": f"layer {l + 1}" for l in range(r.config.model.n_layers)},
                  sample["sense"], [f"{sample['word']}: {s} context" for s in sample["senses"]],
                  ("#2ca02c", "#7f7f7f"), f"seed {sample['seed']}: '{sample['word']}' at "
                  f"position {sample['position']} in {len(sample['sense']) // 2} contexts of "
                  "each sense (top-2 principal components)")))] if sample else [])]


# ---- report ---------------------------------------------------------------------------
def describe(run) -> str:
  t, reps = run.config.task, run.config.probe.replicates
  return (
      f"Task (`task.json`): {t.n_ambiguous} ambiguous words with two senses (apple: fruit or "
      f"company, ...) in {t.seq_len}-word sequences of cue words of one domain (nature: eat, "
      "ripe, ...; tech: stock, ceo, ...) and neutral words, a cue before the ambiguous word, "
      "where the model predicts its sense. Measured: how the word's q, k, v change with the "
      f"context, on a balanced probe set fixed per run (each word at each position in {reps} "
      "contexts of each sense; half fit the ridge probe, half are held out). Layer 1's q, k, "
      "v come from LayerNorm(token + position embedding) alone: the same vector in every "
      "context, exactly (spread 0, sense share 0, probe accuracy 0.5).")


def sections(run, summary) -> list[str]:
  """Per layer and vector, step 0 against the end; the final loss and accuracies."""
  final, reps = summary["final"]["trained"], run.config.probe.replicates
  return [
      "## Per layer: step 0 → end (mean ± std across seeds)", "",
      "From layer 2 on, even a random network's q, k, v depend on the context (through "
      "layer 1's attention); vectors blind to the sense give a share of about "
      f"1/(2 × {reps} − 1) = {1 / (2 * reps - 1):.2f} from sampling alone.", "",
      *report.table(["layer", "vector", "spread across contexts", "sense share",
                     "probe accuracy"],
                    [[l + 1, REP_LABELS[n], *(report.change_cell(run.table(f"{p}/L{l}/{n}")[1])
                                            for p in CURVES)]
                     for l in range(run.config.model.n_layers) for n in REPS]), "",
      "Final values (mean ± std, 95% CI): " + "; ".join(
          f"{k} {report.effect_cell(final[k])}" for k in ("loss", "accuracy",
                                                         "probe_set_accuracy")) + ".", ""]


def validate(c) -> None:
  config_lib.validate_common(c)
  p = c.probe
  config_lib.require(c.model.n_layers >= 2, "model.n_layers", c.model.n_layers,
                     "an integer >= 2 (layer 1 is compared with later layers)")
  config_lib.require(p.replicates >= 2 and p.replicates % 2 == 0, "probe.replicates",
                     p.replicates, "an even integer >= 2 (half fit the probe, half held out)")
  for f in ("ridge", "spread_margin", "acc_margin"):
    config_lib.require(p[f] > 0, f"probe.{f}", p[f], "a number > 0")
  config_lib.require(p.acc_margin < 0.5, "probe.acc_margin", p.acc_margin, "0 < value < 0.5")


STUDY = study.Study(
    name="context", title="qkvjax: are Q, K, V recomputed for every context?",
    task="context", conditions=lambda c: {"trained": {}}, metrics=(metrics.context_probe,),
    claims=claims, figures=figures, describe=describe, validate=validate,
    samples=vectors_sample, sections=sections)

"""Are Q, K, V recomputed for every context while W_Q, W_K, W_V stay fixed?

"apple" is a fruit or a company, "so the Q, K, and V vectors for 'apple'
will be different depending on its surrounding words". On the context task,
each layer's q, k, v of the ambiguous word are measured on a fixed probe set.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from qkvjax import config as config_lib
from qkvjax import metrics
from qkvjax import models
from qkvjax import plotting
from qkvjax import report
from qkvjax import stats
from qkvjax import study
from qkvjax import train
from qkvjax.study import Claim, Figure

plt = plotting.plt
QKV = plotting.QKV
REPS = QKV + ("resid",)  # "resid": the layer's input (residual stream, before its LayerNorm)
REP_COLORS = {**plotting.MATRIX_COLORS, "resid": "0.45"}
REP_LABELS = {"query": "q", "key": "k", "value": "v", "resid": "layer input"}
CHANCE = 0.5  # accuracy from the word and its position alone: a coin for the sense


# ---- metrics (inside the jitted, run-vmapped measurement) ---------------------------
def probe_metrics(m: train.Measurement) -> dict[str, jax.Array]:
  """On the probe set: loss and accuracy, and per layer the ambiguous word's
  spread, sense share and probe accuracy for q, k, v and the layer input,
  and the attention it pays to cue words."""
  task, p = m.task, m.config.probe
  batch, fit_N = task.probe_set(jax.random.PRNGKey(train.EVAL_KEY + m.config.seed),
                                p.replicates)
  loss, task_metrics, cap = m.forward(batch)
  out = {"probe_set_loss": loss, "probe_set_accuracy": task_metrics["accuracy"]}
  rows_N, pos_N = jnp.arange(len(fit_N)), batch.target_pos_B
  for l, resid_BxTxM in enumerate(cap.layer_values("resid_in")):
    tr = cap.attention[f"L{l}"]
    for name, x in zip(REPS, (tr.query_BxTxHxD, tr.key_BxSxHxD, tr.value_BxSxHxD,
                              resid_BxTxM)):
      x_NxF = x[rows_N, pos_N].reshape(len(fit_N), -1)
      out[f"ctx_spread/L{l}/{name}"], out[f"sense_share/L{l}/{name}"] = (
          task.context_variation(x_NxF, batch))
      out[f"probe_acc/L{l}/{name}"] = metrics.linear_probe_accuracy(x_NxF, batch.sense_B,
                                                                    fit_N, p.ridge)
    cues_NxH = jnp.sum(jnp.where(batch.cue_BxT[:, None], tr.weights_BxHxTxS[rows_N, :, pos_N],
                                 0.0), -1)
    out[f"attn_cues/L{l}"] = jnp.mean(cues_NxH)
    out.update({f"attn_cues/L{l}/H{h}": jnp.mean(c) for h, c in enumerate(cues_NxH.T)})
  # What uniform attention over the visible positions would put on the cues.
  visible_NxS = jnp.arange(task.seq_len)[None] <= pos_N[:, None]
  out["attn_cues_uniform"] = jnp.mean(jnp.sum(batch.cue_BxT & visible_NxS, -1)
                                      / jnp.sum(visible_NxS, -1))
  return out


def vectors_sample(trainer, state, conditions, n_contexts: int = 64) -> dict:
  """For the figures: 2-D PCA coordinates (over the vectors' RMS norm) of the
  first word's q, k, v at the last position in ``n_contexts`` contexts of
  each sense, per layer, from the first finite seed's final parameters."""
  task, cfg = trainer.task, trainer.config
  run = train.first_finite_run(state, list(range(cfg.num_seeds)))
  batch = task.contrast_set(jax.random.PRNGKey(10_000 + cfg.seed), n_contexts)
  sense = np.asarray(batch.sense_B)
  _, cap = models.apply(study.run_model(trainer, state, run), batch.tokens_BxT)
  coords = {}
  for site, tr in cap.attention.items():
    for name, x in zip(QKV, (tr.query_BxTxHxD, tr.key_BxSxHxD, tr.value_BxSxHxD)):
      x_NxF = np.asarray(x[:, -1], np.float64).reshape(sense.size, -1)
      centered = x_NxF - x_NxF.mean(0)
      vt = np.linalg.svd(centered, full_matrices=False)[2]
      coords[f"{site}/{name}"] = centered @ vt[:2].T / np.sqrt(np.mean(np.sum(x_NxF**2, -1)))
  return {conditions[0]: {"seed": run, "word": task.words[0], "position": task.seq_len - 1,
                          "sense": sense, "senses": ["nature", "tech"], "coords": coords}}


# ---- claims (from the saved run) ----------------------------------------------------
def claims(run) -> list[Claim]:
  p, n_layers = run.config.probe, run.config.model.n_layers
  floor = 1 / (2 * p.replicates - 1)  # the sense share of vectors blind to the sense
  def qkv_min(r, prefix, l, index):  # per seed, the smallest over q, k, v
    return np.min([r.table(f"{prefix}/L{l}/{n}")[1][:, index] for n in QKV], 0)
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
  return [Claim(
      "prerequisite: the sense is resolved from context",
      "(not a claim; the other verdicts mean little if the model fails)", "qkvjax",
      f"final accuracy on the probe set minus {CHANCE} (the best accuracy from the word and "
      "its position alone); smallest effect of interest probe.acc_margin",
      lambda r: r.final("probe_set_accuracy") - CHANCE, stats.Greater(0.0, p.acc_margin))] + [
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


def curves_figure(run, prefix):
  """One panel per layer: ``prefix/L<l>/<rep>`` over training."""
  _, _, ylabel, title, chance = CURVES[prefix]
  sites = [f"L{l}" for l in range(run.config.model.n_layers)]
  return plotting.per_site_matrices(
      run, prefix, sites, REPS, ylabel, title, colors=REP_COLORS, labels=REP_LABELS,
      titles={s: f"layer {l + 1}" + (" (sees token + position only)" if l == 0 else "")
              for l, s in enumerate(sites)},
      hline=chance, ylim=None if chance is None else (0.4, 1.02))


def layers_figure(run):
  """Headline: each metric against layer, at step 0 (dashed, hollow) and at the end."""
  n_layers = run.config.model.n_layers
  fig, axes = plt.subplots(1, 3, figsize=(9.6, 2.8))
  x = np.arange(1, n_layers + 1)
  for ax, (prefix, (_, _, ylabel, _, chance)) in zip(axes, CURVES.items()):
    for (i, r), (index, ls, tag) in itertools.product(
        enumerate(REPS), ((0, "--", " (step 0)"), (-1, "-", ""))):
      vals = np.stack([run.table(f"{prefix}/L{l}/{r}")[1][:, index] for l in range(n_layers)], 1)
      mean, std = plotting.nan_mean_std(vals)
      ax.errorbar(x + 0.04 * i - 0.06, mean, yerr=std, ls=ls, marker="os"[index], ms=3.5,
                  capsize=2, color=REP_COLORS[r], label=REP_LABELS[r] + tag,
                  mfc="white" if index == 0 else REP_COLORS[r])
    if chance is not None:
      ax.axhline(chance, color="0.5", ls=":", lw=1)
    ax.set(xticks=x, xlabel="layer", ylabel=ylabel)
  fig.suptitle("The ambiguous word's q, k, v across contexts, layer by layer "
               "(dashed: step 0, solid: end)", y=1.03)
  fig.tight_layout()
  axes[-1].legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  plotting.seed_note(fig, int(np.sum(np.all(np.isfinite(vals), 1))))
  return fig


def attention_figure(run):
  n_layers, cmap = run.config.model.n_layers, plt.get_cmap("viridis")
  fig, ax = plt.subplots(figsize=(5.0, 2.8))
  for l in range(n_layers):
    color = cmap(l / max(1, n_layers - 1))
    steps, vals = run.table(f"attn_cues/L{l}")
    n = plotting.band(ax, steps, vals, color, f"layer {l + 1}: mean over heads")
    best = np.max([run.table(k)[1] for k in run.keys(f"attn_cues/L{l}/H")], 0)
    ax.plot(steps, plotting.nan_mean_std(best)[0], color=color, ls="--", lw=1,
            label=f"layer {l + 1}: most cue-seeking head")
  ax.plot(steps, np.nanmean(run.table("attn_cues_uniform")[1], 0), color="0.5", ls=":", lw=1,
          label="uniform")
  ax.set(xlabel="step", ylabel="attention from the ambiguous\nword onto cue words", ylim=(0, 1))
  ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  plotting.seed_note(fig, n)
  return fig


def loss_figure(run):
  fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.6))
  steps, loss = run.table("loss")
  n = plotting.band(axes[0], steps, loss, "k", "loss (training batch)", log=True)
  plotting.band(axes[1], steps, run.table("accuracy")[1], "k", "training batch")
  plotting.band(axes[1], steps, run.table("probe_set_accuracy")[1], "#9467bd", "probe set")
  axes[1].axhline(CHANCE, color="0.5", ls=":", lw=1, label="word + position only")
  axes[0].set(xlabel="step", ylabel="cross-entropy")
  axes[1].set(xlabel="step", ylabel="accuracy of the sense", ylim=(0, 1.02))
  axes[1].legend(frameon=False, fontsize=7)
  plotting.seed_note(fig, n)
  return fig


def vectors_figure(sample, n_layers: int):
  """Rows q, k, v; columns layers: one seed's vectors in both senses' contexts."""
  fig, axes = plt.subplots(3, n_layers, figsize=(2.4 * n_layers, 6.6))
  sense = np.asarray(sample["sense"])
  lim = 1.1 * max(1e-3, max(np.max(np.abs(c)) for c in sample["coords"].values()))
  for (r, name), l in itertools.product(enumerate(QKV), range(n_layers)):
    xy = np.asarray(sample["coords"][f"L{l}/{name}"])
    for s, label in enumerate(sample["senses"]):
      axes[r][l].scatter(*xy[sense == s].T, s=8, alpha=0.6, color=("#2ca02c", "#7f7f7f")[s],
                         label=f"{sample['word']}: {label} context")
    axes[r][l].set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
                   title=f"layer {l + 1}" if r == 0 else "",
                   ylabel=f"{REP_LABELS[name]}: PC2 / RMS norm" if l == 0 else "")
    axes[r][l].tick_params(labelsize=6)
  axes[0][-1].legend(frameon=False, fontsize=6, loc="upper right")
  fig.suptitle(f"seed {sample['seed']}: '{sample['word']}' at position {sample['position']} "
               f"in {len(sense) // 2} contexts of each sense (top-2 principal components)",
               fontsize=8, y=1.0)
  fig.tight_layout()
  return fig


def figures(run) -> list[Figure]:
  sample = (run.file("samples.json") or {}).get("trained")
  return [Figure("Spread, sense share and probe accuracy against layer", "context_layers",
                 layers_figure),
          *[Figure(title, name, lambda r, prefix=prefix: curves_figure(r, prefix))
            for prefix, (name, title, *_) in CURVES.items()],
          Figure("Attention from the ambiguous word onto cue words", "attention_cues",
                 attention_figure),
          Figure("Loss and accuracy", "loss_accuracy", loss_figure),
          *([Figure("One word's q, k, v in many contexts", "vectors_pca",
                    lambda r: vectors_figure(sample, r.config.model.n_layers))]
            if sample else [])]


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
  def cell(key):
    mean, std = plotting.nan_mean_std(run.table(key)[1][:, [0, -1]])
    return " → ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(mean, std))
  return [
      "## Per layer: step 0 → end (mean ± std across seeds)", "",
      "From layer 2 on, even a random network's q, k, v depend on the context (through "
      "layer 1's attention); vectors blind to the sense give a share of about "
      f"1/(2 × {reps} − 1) = {1 / (2 * reps - 1):.2f} from sampling alone.", "",
      *report.table(["layer", "vector", "spread across contexts", "sense share",
                     "probe accuracy"],
                    [[l + 1, REP_LABELS[n], *(cell(f"{p}/L{l}/{n}") for p in CURVES)]
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
    task="context", conditions=lambda c: {"trained": {}}, metrics=(probe_metrics,),
    claims=claims, figures=figures, describe=describe, validate=validate,
    samples=vectors_sample, sections=sections)

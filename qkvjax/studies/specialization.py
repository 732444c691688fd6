"""The headline experiment: do W_Q, W_K and W_V specialize as the articles say?

The selection task (``qkvjax.tasks.selection``) over many seeds, every metric
group logged; claims about where the gradient reaches each matrix, how far
each moves, what Q and K align to, and which vectors stay closest to the
token embedding.
"""

from __future__ import annotations

import numpy as np

from qkvjax import claim_kinds
from qkvjax import effects
from qkvjax import figure_kinds
from qkvjax import metrics
from qkvjax import plotting
from qkvjax import stats
from qkvjax import study
from qkvjax.study import Claim, Figure

plt = plotting.plt
QKV = effects.QKV
QKVO = (*QKV, "out")
QUOTE_SEEK = ("Q \"actively\" seeks certain features associated with other tokens, while K "
              "is \"passively\" prepared to be matched by other tokens")


layers = effects.layers


def spectral_distance(run, index: int, **where) -> np.ndarray:
  return effects.spectral_distance(run, layers(run), index, **where)


def best_head(run, prefix: str, index: int, **where) -> np.ndarray:
  """Per seed, the max over layers and heads of ``prefix/L*/H*`` at a logging point."""
  return effects.best_over(run, run.keys(prefix + "/", **where), index, **where)[0]


def qk_shared_update(run, **where) -> np.ndarray:
  """|cos(dW_Q, dW_K)| minus the mean |cos| of each with dW_V, end, layer mean."""
  def one(site):
    c = {f"{a}_{b}": np.abs(run.final(f"update_cos/{site}/{a}_{b}", **where))
         for a, b in effects.PAIRS}
    return c["query_key"] - (c["query_value"] + c["key_value"]) / 2
  return effects.site_mean(one, layers(run))


def claims(run) -> list[Claim]:
  bar = run.file("task.json")["selection"]["verb_only_accuracy"]
  out = [
      claim_kinds.prerequisite(
          "the task is learned",
          f"final accuracy minus the best accuracy possible from the verb alone ({bar:.3f})",
          claim_kinds.final_above("accuracy", bar)),
      Claim("the task is solved through Q.K selection", QUOTE_SEEK, "division_of_labor",
            "final accuracy minus accuracy with W_Q = W_K = 0 in every layer (uniform "
            "attention, everything else unchanged)",
            lambda r: r.final("accuracy") - r.final("ablate_qk/accuracy"),
            stats.Greater(0.0, 0.05)),
      Claim("W_Q, W_K, W_V start statistically identical",
            "W_Q, W_K, W_V matrices are all randomly initialized", "division_of_labor",
            "at step 0, relative L1 distance between the singular-value spectra of the most "
            "different pair (mean over layers); equivalence margin 0.1",
            lambda r: spectral_distance(r, 0), stats.Equivalent(0.1)),
      claim_kinds.differentiation(
          layers(run), measured="spectral distance (as above) at the end minus at step 0; "
          "smallest effect of interest 0.03, the distance three independent random draws "
          "already have"),
      claim_kinds.v_gradient(
          "the gradient reaches V through the weighted sum, Q and K only through Q.K",
          claim_kinds.GRADIENT_MEASURED + " (> 0: V gets the larger gradient while attention "
          "is diffuse)", layers(run)),
      Claim("Q and K are shaped by one signal (the Q.K similarity), V by another",
            "Gradients for W_K: Also come from Q-K similarity calculation ... Gradients "
            "for W_V: Come from the final weighted sum", "division_of_labor",
            "|cosine| between the cumulative updates of W_Q and W_K minus the mean "
            "|cosine| of each with W_V's, at the end, mean over layers",
            qk_shared_update, stats.Greater(0.0, 0.05)),
      Claim("Q seeks the feature K advertises (verb's query finds the selected noun)",
            QUOTE_SEEK, "division_of_labor",
            "attention weight from the verb onto the ground-truth noun in the best head "
            "(max over layers and heads), end minus step 0",
            lambda r: best_head(r, "attn_target", -1) - best_head(r, "attn_target", 0),
            stats.Greater(0.0, 0.1)),
      claim_kinds.k_index(
          "effective rank of W_K minus that of W_Q at the end, mean over layers "
          "(> 0: K spans more directions)",
          lambda r: effects.site_mean(lambda s: r.final(f"eff_rank/{s}/key")
                                       - r.final(f"eff_rank/{s}/query"), layers(r))),
  ]
  return out + [claim_kinds.v_closest(
      site, f"layer {site[1:]}: linear CKA(V, token embedding) minus the larger of CKA(Q, "
      "embedding) and CKA(K, embedding), at the end") for site in layers(run)]


# ---- figures (from the saved run) --------------------------------------------------
def qk_alignment_figure(run):
  sites, n_heads = layers(run), run.config.model.n_heads
  fig, axes = plt.subplots(2, len(sites), figsize=(3.2 * len(sites), 4.8), squeeze=False,
                           sharex=True)
  cmap = plt.get_cmap("viridis")
  n = 0
  for col, site in enumerate(sites):
    for h in range(n_heads):
      color = cmap(h / max(1, n_heads - 1))
      steps, att = run.table(f"attn_target/{site}/H{h}")
      n = plotting.band(axes[0][col], steps, att, color, f"head {h}")
      gap = (run.table(f"qk_cos_related/{site}/H{h}")[1]
             - run.table(f"qk_cos_unrelated/{site}/H{h}")[1])
      plotting.band(axes[1][col], steps, gap, color, f"head {h}")
    axes[0][col].axhline(1 / run.config.task.n_slots, color="0.5", ls=":", lw=1,
                         label="uniform over nouns")
    axes[0][col].set(title=site, ylim=(0, 1))
    axes[1][col].axhline(0, color="0.5", ls=":", lw=1)
    axes[1][col].set_xlabel("step")
  axes[0][0].set_ylabel("attention on target noun\n(from the verb)")
  axes[1][0].set_ylabel("cos(q_verb, k_target)\n− cos(q_verb, k_other)")
  axes[0][-1].legend(frameon=False, fontsize=7)
  fig.suptitle("Q-K alignment: does the verb's query find the selected noun's key?", y=1.0)
  plotting.seed_note(fig, n)
  return fig


def loss_figure(run):
  bar = run.file("task.json")["selection"]["verb_only_accuracy"]
  fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.6))
  for ax, key, log in ((axes[0], "loss", True), (axes[1], "accuracy", False)):
    steps, vals = run.table(key)
    n = plotting.band(ax, steps, vals, "k", "model", log=log)
    plotting.band(ax, steps, run.table(f"ablate_qk/{key}")[1], "0.6",
                  "$W_Q = W_K = 0$ (uniform attention)", log=log)
    ax.set(xlabel="step", ylabel=key)
  axes[1].axhline(bar, color="0.5", ls=":", lw=1, label="verb alone (best)")
  axes[1].set_ylim(0, 1.02)
  axes[1].legend(frameon=False, fontsize=7)
  plotting.seed_note(fig, n)
  return fig


def figures(run) -> list[Figure]:
  sample = (run.file("samples.json") or {}).get("default")
  vocab = run.file("task.json")["selection"]["vocab"]
  out = [
      figure_kinds.site_curves(
          "Gradient norm of each attention matrix", "grad_norms", "grad_norm", QKVO,
          "gradient norm", "Gradient norms of $W_Q, W_K, W_V, W_O$", log=True),
      figure_kinds.site_curves(
          "Relative distance from initialization", "rel_dist_init", "rel_dist_init", QKVO,
          "||W - W_init|| / ||W_init||", "How far each matrix moved"),
      figure_kinds.site_curves(
          "Similarity of Q, K, V vectors to the token embedding", "embed_similarity",
          "cka_embed", QKV, "linear CKA with token embedding",
          "Which projection stays closest to the embedding?"),
      figure_kinds.site_curves(
          "Effective rank of W_Q, W_K, W_V", "eff_rank", "eff_rank", QKV, "effective rank",
          "Effective rank (exp entropy of singular values)"),
      Figure("Q-K alignment on the ground-truth noun", "qk_alignment", qk_alignment_figure),
      figure_kinds.spectra(),
      Figure("Loss and accuracy", "loss_accuracy", loss_figure),
  ]
  if sample:
    out.append(Figure("Attention on a sample sequence (ground-truth noun boxed)",
                      "attention_map", lambda r: plotting.attention_sample_figure(
                          sample, vocab, "target_pos_B", f"seed {sample['seed']}")))
  return out


def describe(run) -> str:
  return ("Task: a sequence of nouns of distinct categories followed by a verb; the model "
          "predicts, at the verb, the colour of the noun the verb selects (`task.json`). "
          "The colour belongs to the noun, so the intended solution is the articles' "
          "division of labour (the verb's query seeks the category, the noun's key "
          "advertises it, its value carries the colour); the run measures which route the "
          "model took rather than assuming it.")


STUDY = study.Study(
    name="specialization", title="qkvjax: how W_Q, W_K and W_V specialize",
    task="selection",
    metrics=(metrics.weight_norms, metrics.spectra, metrics.embedding_similarity,
             metrics.ov_copying, metrics.target_attention, metrics.ablate_qk),
    claims=claims, figures=figures, describe=describe,
    samples=study.attention_samples)

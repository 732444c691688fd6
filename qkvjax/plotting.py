"""Paper-style figures drawn from saved metrics only (never from live state).

Every figure comparing conditions shows the mean across seeds with a band of
one standard deviation and states the seed count. W_Q, W_K, W_V, W_O keep
one colour each in every figure (``MATRIX_COLORS``).
"""

from __future__ import annotations

import io
import pathlib
import warnings
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from qkvjax import results  # pylint: disable=wrong-import-position

MATRIX_COLORS = {"query": "#1f77b4", "key": "#ff7f0e", "value": "#2ca02c",
                 "out": "#d62728"}
MATRIX_LABELS = {"query": "$W_Q$", "key": "$W_K$", "value": "$W_V$", "out": "$W_O$"}

plt.rcParams.update({
    "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 9,
    "axes.labelsize": 9, "legend.fontsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "lines.linewidth": 1.5,
})


def save(fig, run_dir: pathlib.Path, name: str) -> str:
  """Writes ``name.png`` and ``name.pdf`` atomically; returns the PNG name."""
  for ext in ("png", "pdf"):
    buf = io.BytesIO()
    fig.savefig(buf, format=ext, bbox_inches="tight")
    results.write_atomic(run_dir / f"{name}.{ext}", buf.getvalue())
  plt.close(fig)
  return f"{name}.png"


def band(ax, steps, values_SxN, color, label, log=False):
  """Mean across seeds with a +-1 std band; NaNs (diverged) are skipped."""
  n = int(np.sum(np.any(np.isfinite(values_SxN), 1)))
  mean, std = nan_mean_std(values_SxN)
  ax.plot(steps, mean, color=color, label=label)
  lo, hi = mean - std, mean + std
  if log:
    lo = np.maximum(lo, mean * 0.05)
  ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
  if log:
    ax.set_yscale("log")
  return n


def nan_mean_std(x, axis=0):
  """Mean and std ignoring NaNs (diverged seeds), without all-NaN warnings."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return np.nanmean(x, axis), np.nanstd(x, axis)


def seed_note(fig, n: int):
  fig.text(0.99, 0.005, f"mean ± 1 std over {n} seeds", ha="right", va="bottom",
           fontsize=7, color="0.4")


def per_layer_matrix_figure(rows, n_layers, prefix, names, ylabel, title, log=False,
                            extra=None):
  fig, axes = plt.subplots(1, n_layers, figsize=(3.2 * n_layers, 2.6), squeeze=False,
                           sharey=True)
  n = 0
  for l, ax in enumerate(axes[0]):
    for name in names:
      steps, vals = results.metric_table(rows, f"{prefix}/L{l}/{name}")
      n = band(ax, steps, vals, MATRIX_COLORS.get(name, None), MATRIX_LABELS.get(name, name),
               log=log)
    if extra:
      extra(ax, l)
    ax.set_title(f"layer {l}")
    ax.set_xlabel("step")
  axes[0][0].set_ylabel(ylabel)
  axes[0][-1].legend(frameon=False)
  fig.suptitle(title, y=1.02)
  seed_note(fig, n)
  return fig


def specialization_figures(run_dir: pathlib.Path, rows: list[dict[str, Any]],
                           config, verb_only_accuracy: float) -> dict[str, str]:
  """All figures of the specialization experiment; returns {title: png}."""
  n_layers, n_heads = config.model.n_layers, config.model.n_heads
  figs: dict[str, str] = {}
  figs["Gradient norm of each attention matrix"] = save(per_layer_matrix_figure(
      rows, n_layers, "grad_norm", ("query", "key", "value", "out"), "gradient norm",
      "Gradient norms of $W_Q, W_K, W_V, W_O$", log=True), run_dir, "grad_norms")

  figs["Relative distance from initialization"] = save(per_layer_matrix_figure(
      rows, n_layers, "rel_dist_init", ("query", "key", "value", "out"),
      "||W - W_init|| / ||W_init||", "How far each matrix moved"), run_dir, "rel_dist_init")

  figs["Similarity of Q, K, V vectors to the token embedding"] = save(
      per_layer_matrix_figure(rows, n_layers, "cka_embed", ("query", "key", "value"),
                              "linear CKA with token embedding",
                              "Which projection stays closest to the embedding?"),
      run_dir, "embed_similarity")

  figs["Effective rank of W_Q, W_K, W_V"] = save(per_layer_matrix_figure(
      rows, n_layers, "eff_rank", ("query", "key", "value"), "effective rank",
      "Effective rank (exp entropy of singular values)"), run_dir, "eff_rank")

  figs["Q-K alignment on the ground-truth noun"] = save(
      qk_alignment_figure(rows, n_layers, n_heads, 1.0 / (config.task.n_slots + 1)),
      run_dir, "qk_alignment")
  figs["Singular-value spectra at initialization and at the end"] = save(
      spectra_figure(rows, n_layers), run_dir, "spectra")
  figs["Loss and accuracy"] = save(loss_figure(rows, verb_only_accuracy),
                                   run_dir, "loss_accuracy")
  sample = run_dir / "attention_sample.json"
  if sample.exists():
    figs["Attention on a sample sequence (ground-truth noun boxed)"] = save(
        attention_map_figure(results.read_json(sample)), run_dir, "attention_map")
  return figs


def qk_alignment_figure(rows, n_layers, n_heads, chance):
  fig, axes = plt.subplots(2, n_layers, figsize=(3.2 * n_layers, 4.8), squeeze=False,
                           sharex=True)
  cmap = plt.get_cmap("viridis")
  n = 0
  for l in range(n_layers):
    ax = axes[0][l]
    for h in range(n_heads):
      steps, vals = results.metric_table(rows, f"attn_target/L{l}/H{h}")
      n = band(ax, steps, vals, cmap(h / max(1, n_heads - 1)), f"head {h}")
    ax.axhline(chance, color="0.5", ls=":", lw=1, label="uniform")
    ax.set_title(f"layer {l}")
    ax.set_ylim(0, 1)
    ax = axes[1][l]
    for h in range(n_heads):
      steps, rel = results.metric_table(rows, f"qk_cos_related/L{l}/H{h}")
      _, unrel = results.metric_table(rows, f"qk_cos_unrelated/L{l}/H{h}")
      band(ax, steps, rel - unrel, cmap(h / max(1, n_heads - 1)), f"head {h}")
    ax.axhline(0, color="0.5", ls=":", lw=1)
    ax.set_xlabel("step")
  axes[0][0].set_ylabel("attention on target noun\n(from the verb)")
  axes[1][0].set_ylabel("cos(q_verb, k_target)\n− cos(q_verb, k_other)")
  axes[0][-1].legend(frameon=False, fontsize=7)
  fig.suptitle("Q-K alignment: does the verb's query find the selected noun's key?", y=1.0)
  seed_note(fig, n)
  return fig


def spectra_figure(rows, n_layers):
  fig, axes = plt.subplots(1, n_layers, figsize=(3.2 * n_layers, 2.6), squeeze=False,
                           sharey=True)
  for l, ax in enumerate(axes[0]):
    for name in ("query", "key", "value"):
      for index, ls, suffix in ((0, "--", " init"), (-1, "-", " end")):
        s = results.spectrum(rows, l, name, index)
        x = np.arange(1, s.shape[1] + 1)
        mean, std = nan_mean_std(s)
        ax.plot(x, mean, ls=ls, color=MATRIX_COLORS[name], label=MATRIX_LABELS[name] + suffix)
        ax.fill_between(x, mean - std, mean + std, color=MATRIX_COLORS[name], alpha=0.15,
                        linewidth=0)
    ax.set_yscale("log")
    ax.set_title(f"layer {l}")
    ax.set_xlabel("singular value index")
  axes[0][0].set_ylabel("singular value")
  axes[0][-1].legend(frameon=False, fontsize=7, ncol=2)
  fig.suptitle("Spectra of $W_Q, W_K, W_V$: dashed at init, solid at the end", y=1.02)
  seed_note(fig, int(np.sum(np.isfinite(s[:, 0]))))
  return fig


def loss_figure(rows, verb_only_accuracy):
  fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.6))
  steps, loss = results.metric_table(rows, "loss")
  n = band(axes[0], steps, loss, "k", "loss", log=True)
  if "ablate_qk/loss" in rows[0]:
    band(axes[0], steps, results.metric_table(rows, "ablate_qk/loss")[1], "0.6",
         "$W_Q = W_K = 0$", log=True)
  axes[0].set_ylabel("cross-entropy")
  steps, acc = results.metric_table(rows, "accuracy")
  band(axes[1], steps, acc, "k", "model")
  if "ablate_qk/accuracy" in rows[0]:
    band(axes[1], steps, results.metric_table(rows, "ablate_qk/accuracy")[1], "0.6",
         "$W_Q = W_K = 0$ (uniform attention)")
  axes[1].axhline(verb_only_accuracy, color="0.5", ls=":", lw=1, label="verb alone (best)")
  axes[1].set_ylabel("accuracy")
  axes[1].set_ylim(0, 1.02)
  axes[1].legend(frameon=False, fontsize=7)
  for ax in axes:
    ax.set_xlabel("step")
  seed_note(fig, n)
  return fig


def attention_map_figure(sample: dict[str, Any]):
  w = np.asarray(sample["weights_LxHxTxS"])
  n_layers, n_heads, t, _ = w.shape
  tokens, target = sample["tokens"], sample["target_pos"]
  fig, axes = plt.subplots(n_layers, n_heads, figsize=(2.0 * n_heads, 2.0 * n_layers + 0.4),
                           squeeze=False)
  for l in range(n_layers):
    for h in range(n_heads):
      ax = axes[l][h]
      ax.imshow(w[l, h], vmin=0, vmax=1, cmap="Blues")
      ax.add_patch(plt.Rectangle((target - 0.5, t - 1.5), 1, 1, fill=False,
                                 edgecolor="#d62728", lw=2))
      ax.set_xticks(range(t), tokens, rotation=90, fontsize=7)
      ax.set_yticks(range(t), tokens if h == 0 else [""] * t, fontsize=7)
      ax.set_title(f"L{l} H{h}", fontsize=8)
  fig.suptitle(f"seed {sample['seed']}: '{tokens[-1]}' selects '{tokens[target]}' "
               f"→ target '{sample['target']}', predicted '{sample['predicted']}'\n"
               "rows: query position, columns: key position; red box: ground truth",
               fontsize=8, y=1.02)
  fig.tight_layout()
  return fig

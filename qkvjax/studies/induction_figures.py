"""The ``--exp=induction`` figures, drawn from a saved run (its metrics and
samples) with the readings of ``induction_analysis``."""

from __future__ import annotations

import numpy as np

from qkvjax import plotting
from qkvjax.studies.induction_analysis import (COLORS, KIND_COLORS, NAMES, PROBES, baselines,
                                               best, comp, drop, gain)

plt = plotting.plt


def _shade(ax, run, half):
  for d in drop(run)[0]:
    if np.isfinite(d):
      ax.axvspan(d - half, d + half, color="0.85", alpha=0.35, lw=0)


def phase_figure(run):
  """Every seed on one step axis: losses by position kind, attention scores,
  recall probes and the in-context gain of every condition; the drop
  windows of the 2-layer seeds shaded."""
  fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharex=True)
  half, b, n = run.config.drop_window * run.config.log_every / 2, baselines(run), 0
  steps = run.table("loss", condition="main")[0]
  for kind, color in KIND_COLORS.items():
    n = plotting.seed_curves(axes[0][0], steps, run.table(f"eval/loss/{kind}",
                                                          condition="main")[1], color, kind)
  for (metric, site), color in ((("prefix_matching", "L1"), "tab:blue"),
                                (("previous_token", "L0"), "tab:orange")):
    plotting.seed_curves(axes[0][1], steps, best(run, metric, site, "main")[0], color,
                         f"{metric.replace('_', ' ')}, best {site} head")
    axes[0][1].axhline(b[metric], color=color, ls=":", lw=1)
  for probe, color in PROBES.items():
    plotting.seed_curves(axes[1][0], steps, run.table(f"recall/{probe}", condition="main")[1],
                         color, probe.replace("_", " "))
  for cond in run.conditions:
    plotting.seed_curves(axes[1][1], steps, gain(run, cond), COLORS[cond], NAMES[cond])
  titles = ("2-layer: loss by position kind (eval batch)", "2-layer: attention on the "
            "repeated probe (dotted: uniform)", "2-layer: memory-recall probes (Bietti et al.)",
            "accuracy, repeated minus first outputs")
  for ax, title in zip(axes.ravel(), titles):
    _shade(ax, run, half)
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, fontsize=7)
  for ax in axes[1]:
    ax.set_xlabel("step")
  fig.tight_layout()
  plotting.seed_note(fig, n, "thin: seeds, thick: mean; grey: each 2-layer seed's drop window")
  return fig


def heads_figure(run):
  """Per condition (rows) the seed-mean final score of each layer and head."""
  metrics = {"previous_token": ("previous token", "Blues", 1), "prefix_matching":
             ("prefix matching", "Blues", 1), "ov_copying": ("copying Σλ/Σ|λ|", "RdBu_r", -1)}
  conds = list(run.conditions)
  fig, axes = plt.subplots(len(conds), 3, figsize=(9, 1.6 + 1.4 * len(conds)), squeeze=False)
  for i, cond in enumerate(conds):
    m = run.config.model
    layers = 1 if cond == "one_layer" else m.n_layers
    for j, (metric, (label, cmap, lo)) in enumerate(metrics.items()):
      grid = np.array([[np.nanmean(run.final(f"{metric}/L{l}/H{h}", condition=cond))
                        for h in range(m.n_heads)] for l in range(layers)])
      im = axes[i][j].imshow(grid, cmap=cmap, vmin=min(lo, 0), vmax=1, aspect="auto")
      for (y, x), v in np.ndenumerate(grid):
        axes[i][j].text(x, y, f"{v:.2f}", ha="center", va="center", fontsize=7)
      axes[i][j].set(title=f"{label}, {NAMES[cond]}", xticks=range(m.n_heads),
                     yticks=range(layers), yticklabels=[f"L{l}" for l in range(layers)])
      fig.colorbar(im, ax=axes[i][j], shrink=0.8)
  fig.tight_layout()
  n = plotting.seeds_counted(run.final("loss", condition="main"))
  plotting.seed_note(fig, n, "cells: mean over seeds at the end")
  return fig


def composition_figure(run):
  """Per untied/tied model: Q, K, V composition of every layer-1 x layer-2
  head pair (seed mean), and the induction pair's per seed against the baseline."""
  conds, h, base = ("main", "tied"), run.config.model.n_heads, baselines(run)["composition"]
  fig, axes = plt.subplots(2, 4, figsize=(12, 5.5), squeeze=False)
  for i, cond in enumerate(conds):
    for j, kind in enumerate("qkv"):
      grid = np.array([[np.nanmean(run.final(f"{kind}_comp/L0H{a}/L1H{c}", condition=cond))
                        for c in range(h)] for a in range(h)])
      im = axes[i][j].imshow(grid, cmap="Blues", vmin=0, vmax=max(0.3, grid.max()))
      for (y, x), v in np.ndenumerate(grid):
        axes[i][j].text(x, y, f"{v:.3f}", ha="center", va="center", fontsize=7)
      axes[i][j].set(title=f"{kind.upper()}-composition, {NAMES[cond]}\n(random: {base:.3f})",
                     xlabel="layer-2 head", ylabel="layer-1 head")
      fig.colorbar(im, ax=axes[i][j], shrink=0.7)
    plotting.per_seed_dots(axes[i][3], {k: comp(run, k, cond) for k in "qkv"},
                           dict(zip("qkv", ("tab:orange", "tab:blue", "tab:green"))),
                           {"q": "Q", "k": "K", "v": "V"})
    axes[i][3].axhline(base, color="0.4", ls=":", lw=1)
    axes[i][3].set_title(f"induction pair per seed, {NAMES[cond]}", fontsize=9)
  fig.tight_layout()
  plotting.seed_note(fig, plotting.seeds_counted(comp(run, "k")), "dotted: random matrices")
  return fig


def attention_figure(run):
  """One seed's attention on a repeated random sequence, per layer and model:
  the induction head's offset diagonal (key = query - half + 1)."""
  samples = run.file("samples.json") or {}
  conds = [c for c in ("main", "tied", "one_layer") if c in samples]
  sites = max((sorted(samples[c]["sites"]) for c in conds), key=len)
  fig, axes = plt.subplots(len(conds), len(sites), figsize=(4 * len(sites), 3.6 * len(conds)),
                           squeeze=False)
  for i, cond in enumerate(conds):
    for j, site in enumerate(sites):
      ax = axes[i][j]
      if site not in samples[cond]["sites"]:
        ax.axis("off")
        continue
      w = np.asarray(samples[cond]["sites"][site])[0]
      ax.imshow(w, cmap="Greys", vmin=0, vmax=1)
      ax.set(title=f"{NAMES[cond]} (seed {samples[cond]['seed']}), {site} head 0",
             xlabel="key position", ylabel="query position")
  fig.tight_layout()
  plotting.seed_note(fig, 1, "one seed; a random sequence of "
                     f"{run.config.task.probe_len} tokens, repeated")
  return fig

"""Reading a saved ``--exp=induction`` run: the induction head of each seed,
drop and rise steps, baselines, the figures and the table beside the papers
(everything from the saved metrics and samples)."""

from __future__ import annotations

import jax
import numpy as np

from qkvjax import models
from qkvjax import plotting
from qkvjax import report
from qkvjax import stats
from qkvjax import study
from qkvjax import train
from qkvjax.metrics import induction as ind

plt = plotting.plt
NAMES = {"main": "2-layer", "one_layer": "1-layer", "tied": "2-layer, W_K = W_Q"}
COLORS = {"main": "tab:blue", "one_layer": "tab:gray", "tied": "tab:red"}
KIND_COLORS = {"repeat": "tab:blue", "first": "tab:orange", "bigram": "tab:green"}
PROBES = {"copy": "tab:purple", "token": "tab:olive", "previous_position": "tab:cyan"}


def best(run, prefix: str, site: str, cond: str) -> np.ndarray:
  """[seeds, steps] of the head of ``site`` with the highest final ``prefix`` score."""
  keys = run.keys(f"{prefix}/{site}/H", condition=cond)
  tables = np.stack([run.table(k, condition=cond)[1] for k in keys])  # [H, S, N]
  pick = np.argmax(np.nan_to_num(tables[:, :, -1], nan=-1), 0)
  return tables[pick, np.arange(tables.shape[1])], pick


def gain(run, cond):
  """[seeds, steps]: accuracy on repeated outputs minus on first outputs."""
  return (run.table("eval/accuracy/repeat", condition=cond)[1]
          - run.table("eval/accuracy/first", condition=cond)[1])


def drop(run, cond="main"):
  """Per seed, (drop step, sharpness) of the repeated-output loss relative to
  the first-output loss (the same unpredictable-without-context tokens), so
  the fall from the random-init loss that every position kind shares cancels."""
  c = run.config
  steps, rep = run.table("eval/loss/repeat", condition=cond)
  return ind.steepest_drop(steps, rep - run.table("eval/loss/first", condition=cond)[1],
                           c.drop_window, c.skip_steps)


def rise(run, key_or_values, cond="main", min_rise=0.1):
  steps = run.table("loss", condition=cond)[0]
  vals = run.table(key_or_values, condition=cond)[1] if isinstance(key_or_values, str) \
      else key_or_values
  return ind.rise_step(steps, vals, min_rise, run.config.steps + run.config.log_every)


def formed(run, cond):
  """Per seed, the first step the in-context gain reached 0.3 (censored)."""
  steps = run.table("loss", condition=cond)[0]
  return stats.steps_to_threshold(steps, gain(run, cond), 0.3,
                                  run.config.steps + run.config.log_every)


def comp(run, kind, cond="main"):
  """Per seed, the final ``kind``-composition of the best previous-token head
  of layer 0 with the best prefix-matching head of layer 1."""
  _, h0 = best(run, "previous_token", "L0", cond)
  _, h1 = best(run, "prefix_matching", "L1", cond)
  return np.array([run.final(f"{kind}_comp/L0H{a}/L1H{b}", condition=cond)[s]
                   for s, (a, b) in enumerate(zip(h0, h1))])


def baselines(run) -> dict[str, float]:
  m = run.config.model
  return {"composition": ind.composition_baseline(m.d_model, m.d_head),
          "copying": ind.copying_baseline(len(run.file("task.json")["induction"]["vocab"]),
                                          m.d_model, m.d_head),
          **ind.uniform_attention_scores(run.config.task.probe_len)}


def summary(run) -> dict:
  d, sharp = drop(run)
  return {"baselines": baselines(run), "drop_step": d.tolist(), "sharpness": sharp.tolist(),
          "rise_steps": {p: rise(run, f"recall/{p}").tolist() for p in PROBES},
          "formed_step": {c: formed(run, c).tolist() for c in ("main", "tied")}}


def samples(trainer, state, conds) -> dict:
  """The first finite seed's attention on one repeated probe, per condition."""
  s, out = trainer.config.num_seeds, {}
  probe = trainer.task.repeated(jax.random.PRNGKey(ind.PROBE_KEY), 1)
  for i, name in enumerate(conds):
    run = train.first_finite_run(state, list(range(i * s, (i + 1) * s)))
    _, cap = models.apply(study.run_model(trainer, state, run), probe)
    out[name] = {"seed": run - i * s, "tokens": np.asarray(probe[0]).tolist(),
                 "sites": {k: np.asarray(t.weights_BxHxTxS[0]) for k, t in cap.attention.items()}}
  return out


# ---- figures ---------------------------------------------------------------------------
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


# ---- beside the papers ---------------------------------------------------------------
def _cell(values, digits=3):
  return report.effect_cell(stats.describe(values)) if digits else str(values)


def _median_range(values):
  v = np.asarray(values, float)
  v = v[np.isfinite(v)]
  return f"median {np.median(v):.0f} (range {v.min():.0f}–{v.max():.0f}; {v.size} seeds)" \
      if v.size else "—"


def paper_rows(run) -> list[list]:
  b, d = baselines(run), drop(run)
  ind_pm = best(run, "prefix_matching", "L1", "main")[0][:, -1]
  rise_ = {p: rise(run, f"recall/{p}") for p in PROBES}
  return [
      ["phase change in the repeated-output loss", "Olsson et al.: an abrupt drop (a bump "
       "in the loss) early in training", f"drop at step {_median_range(d[0])}; sharpness "
       f"{_cell(d[1])}× the average slope"],
      ["prefix-matching score of the induction head", "Olsson et al.: rises at the phase "
       "change, high after", f"{_cell(ind_pm)} (uniform attention: "
       f"{b['prefix_matching']:.3f})"],
      ["1-layer attention-only model", "Olsson et al.: no induction heads", "repeated-minus-"
       f"first accuracy {_cell(gain(run, 'one_layer')[:, -1])} (2-layer: "
       f"{_cell(gain(run, 'main')[:, -1])})"],
      ["K-composition of the induction head", "Elhage et al.: the induction head's key "
       "composes with a previous-token head", f"K {_cell(comp(run, 'k'))}, Q "
       f"{_cell(comp(run, 'q'))}, V {_cell(comp(run, 'v'))}; random {b['composition']:.3f}"],
      ["copying (Σλ/Σ|λ| of the OV circuit)", "Elhage et al.: positive for induction heads",
       f"{_cell(np.array([run.final(f'ov_copying/L1/H{h}', condition='main')[s] for s, h in enumerate(best(run, 'prefix_matching', 'L1', 'main')[1])]))}; "
       f"random {b['copying']:.3f}"],
      ["order of the memory-recall probes", "Bietti et al.: top-down (W_O² copy, then W_K² "
       "token, then W_K¹ previous position)", "; ".join(
           f"{p.replace('_', ' ')} rises at {_median_range(v)}" for p, v in rise_.items())],
      ["W_K = W_Q tied", "(no paper; the explainers' independent matrices)", "gain ≥ 0.3 at "
       f"step {_median_range(formed(run, 'tied'))} (untied: "
       f"{_median_range(formed(run, 'main'))}; censored at {run.config.steps + run.config.log_every})"],
  ]

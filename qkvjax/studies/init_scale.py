"""``--exp=init_scale``: does W_Q, W_K, W_V specialization grow as their
initialization shrinks?

With a large initialization a network can fit its task while its weights
barely move (the *lazy* regime); a small one forces the weights to move far
from where they started (the *rich*, feature-learning regime; Chizat et al.
2019). The headline run moves W_Q, W_K, W_V little, so this asks whether the
articles' "division of labour" is a property of training itself or of the
initialization scale. One condition per scale of the W_Q, W_K, W_V
initializer; all fold into one vmapped program (the same seed keys, so the
comparisons are paired by seed).
"""

from __future__ import annotations

import numpy as np

from qkvjax import effects
from qkvjax import claim_kinds
from qkvjax import config as config_lib
from qkvjax import metrics
from qkvjax import plotting
from qkvjax import stats
from qkvjax import study
from qkvjax.study import Claim, Figure

QKV = effects.QKV


def scales(run) -> dict[str, float]:
  return {name: over["model.qkv_init_scale"] for name, over in run.conditions.items()}


def conditions(config) -> dict[str, dict]:
  return {f"scale={s:g}": {"model.qkv_init_scale": s} for s in config.scales}


def growth(run, cond) -> np.ndarray:
  """Spectral distance between W_Q, W_K, W_V at the end minus at step 0."""
  sites = effects.layers(run)
  return (effects.spectral_distance(run, sites, -1, condition=cond)
          - effects.spectral_distance(run, sites, 0, condition=cond))


def moved(run, cond) -> np.ndarray:
  """||W - W_init|| / ||W_init|| at the end, mean over W_Q, W_K, W_V and layers."""
  return np.mean([run.final(f"rel_dist_init/{site}/{n}", condition=cond)
                  for site in effects.layers(run) for n in QKV], 0)


def v_gap(run, cond) -> np.ndarray:
  """CKA(V, embedding) minus the larger of Q's and K's, at the end, layer mean."""
  return np.mean([effects.cka_margin(run, s, condition=cond) for s in effects.layers(run)], 0)


MEASURES = {  # name: (function, label, smallest effect of interest of the contrast)
    "growth": (growth, "spectral distance growth (end − start)", 0.03),
    "moved": (moved, "relative distance from init of W_Q, W_K, W_V", 0.1),
    "v_gap": (v_gap, "CKA(V, emb) − max CKA(Q or K, emb)", 0.02),
}


def claims(run) -> list[Claim]:
  sc = scales(run)
  small, large = min(sc, key=sc.get), max(sc, key=sc.get)
  bar = run.file("task.json")["selection"]["verb_only_accuracy"]
  out = [claim_kinds.prerequisite(
      f"the task is learned at init scale {sc[c]:g}",
      f"final accuracy minus the best from the verb alone ({bar:.3f})",
      claim_kinds.final_above("accuracy", bar, condition=c),
      why="a scale that fails the task says nothing about specialization") for c in sc]
  texts = {"growth": "W_Q, W_K, W_V differentiate more when initialized smaller",
           "moved": "W_Q, W_K, W_V move further from their initialization when it is smaller "
                    "(the rich, not the lazy, regime)",
           "v_gap": "V stays closer to the embedding than Q and K when initialized smaller"}
  for key, (fn, label, smallest) in MEASURES.items():
    out.append(Claim(
        texts[key], claim_kinds.QUOTE_DIFFERENTIATE if key != "v_gap" else
        claim_kinds.QUOTE_V_EMBED,
        "division_of_labor" if key != "moved" else "chizat2019",
        f"{label} at init scale {sc[small]:g} minus at {sc[large]:g}, paired by seed; "
        f"smallest effect of interest {smallest:g}",
        lambda r, fn=fn: fn(r, small) - fn(r, large), stats.Greater(0.0, smallest)))
  return out


def versus_scale_figure(run):
  sc = scales(run)
  fig, axes = plotting.plt.subplots(1, len(MEASURES), figsize=(3.4 * len(MEASURES), 2.8))
  colors = plotting.condition_colors(list(sc))
  n = 0
  for ax, (fn, label, _) in zip(axes, MEASURES.values()):
    values = {c: fn(run, c) for c in sc}
    plotting.per_seed_dots(ax, values, colors, {c: f"{sc[c]:g}" for c in sc})
    n = max(plotting.seeds_counted(v) for v in values.values())
    ax.set(xlabel="W_Q, W_K, W_V init scale (variance)", title=label)
    ax.axhline(0, color="0.5", ls=":", lw=1)
  fig.suptitle("Specialization against the initialization scale (dots: seeds)", y=1.03)
  fig.tight_layout()
  plotting.seed_note(fig, n)
  return fig


def curves_figure(run):
  sc = scales(run)
  colors = plotting.condition_colors(list(sc))
  panels = [("loss", "loss", True), ("accuracy", "accuracy", False)] + [
      (f"rel_dist_init/L0/{n}", f"{plotting.MATRIX_LABELS[n]} moved (layer 0)", False)
      for n in QKV]
  fig, axes = plotting.plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 2.6))
  n = 0
  for ax, (key, label, log) in zip(axes, panels):
    for c in sc:
      steps, vals = run.table(key, condition=c)
      n = plotting.band(ax, steps, vals, colors[c], f"scale {sc[c]:g}", log=log)
    ax.set(xlabel="step", title=label)
  axes[-1].legend(frameon=False, fontsize=7)
  fig.tight_layout()
  plotting.seed_note(fig, n)
  return fig


def figures(run) -> list[Figure]:
  return [Figure("Specialization against the initialization scale", "versus_scale",
                 versus_scale_figure),
          Figure("Training curves and distance from init per scale", "curves", curves_figure)]


def describe(run) -> str:
  sc = ", ".join(f"{v:g}" for v in scales(run).values())
  return ("The headline selection task, with the W_Q, W_K, W_V initializer's variance "
          f"scaled by {sc} (lecun_normal: standard deviation × √scale); every other "
          "parameter as in `--exp=specialization`. All scales train in one vmapped program "
          "from the same seed keys, so each contrast is paired by seed.")


def validate(config) -> None:
  config_lib.validate_common(config)
  config_lib.require_values(config, "scales", lambda s: 0 < s <= 100,
                            "distinct numbers in (0, 100], at least two")
  config_lib.require(len(config.scales) >= 2, "scales", config.scales, "at least two scales")


STUDY = study.Study(
    name="init_scale", title="qkvjax: does specialization grow as the initialization shrinks?",
    task="selection", conditions=conditions,
    metrics=(metrics.weight_norms, metrics.spectra, metrics.embedding_similarity),
    claims=claims, figures=figures, describe=describe, validate=validate)

"""Reading a saved ``--exp=induction`` run: the induction head of each seed,
drop and rise steps, baselines and the table beside the papers (everything
from the saved metrics and samples; the figures are ``induction_figures``)."""

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

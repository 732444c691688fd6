"""`heads`: do the heads of multi-head attention specialize to different relations?

The two-relation task (``relation_tasks.TwoRelationTask``) asks the final
position for two answers at once: the colour of the noun the verb selects
(relation ``select``) and the manner of the adverb just before the verb
(relation ``prev``). Each answer is read from its own slice of the output
vocabulary (colours, manners) with its own cross-entropy; the loss is their sum.

For each head count, trained over all seeds in one vmapped program, every
logging point measures on a fixed eval batch, per head h and relation r:
``share/r/L/H`` (the attention of the final position on r's target) and
``ablation/r/L/H`` (the increase of r's loss when head h alone is zeroed, by
zeroing its slice of W_O, which removes exactly its output). From these, per
seed, the separation index 1 - sum_h min(p_select(h), p_prev(h)), where p_r is
r's attention share or ablation damage normalized over heads: 0 when every
head serves both relations alike (always, with one head), 1 when no head
serves both.
"""

from __future__ import annotations

import collections
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from qkvjax import config as config_lib
from qkvjax import model as model_lib
from qkvjax import plotting
from qkvjax import relation_tasks
from qkvjax import report
from qkvjax import results
from qkvjax import runner
from qkvjax import stats
from qkvjax import train
from qkvjax.config import ConfigError
from qkvjax.relation_tasks import RELATIONS

EXP = "heads"
REL_TEXT = {"select": "select: verb -> the noun it selects (answer: its colour)",
            "prev": "prev: verb -> the token before it (answer: the adverb's manner)"}
REL_TITLE = {"select": "select: verb -> the noun it selects\n(answer: its colour)",
             "prev": "prev: verb -> the token before it\n(answer: the adverb's manner)"}
HEAD_BUDGETS = ("total", "per_head")
EVAL_KEY = 20_000  # the eval batch is drawn from PRNGKey(EVAL_KEY + config.seed)
# Compile time dominates these small runs: one-shot programs (initialization,
# a measurement) compile several times faster without XLA's backend
# optimizations and run about as fast; training chunks compile at level 1,
# about twice as fast as the default, and run as fast (see studies/tied.py).
FAST_COMPILE = {"xla_backend_optimization_level": 0}
CHUNK_COMPILE = {"xla_backend_optimization_level": 1}
MIN_DAMAGE = 1e-3  # nats: below this total, a relation's ablation profile is undefined

ARTICLE_000 = "../shared/seeds/000 (multi-head attention mechanism)"
QUOTE = ("Different attention heads form a \"division of labor\" ... like having a team "
         "of detectives investigating different directions")


def parse_heads(text: str) -> list[int]:
  return [int(s) for s in text.split(",") if s.strip()]


def condition_config(config: ml_collections.ConfigDict, n_heads: int) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``n_heads`` heads and the budget's d_head."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.model.n_heads = n_heads
  if config.head_budget == "total":
    c.model.d_head = config.model.d_model // n_heads
  return c


def ablate_head(params: model_lib.Params, layer: int, head: int) -> model_lib.Params:
  """``params`` with head ``head`` of ``layer`` removed: its W_O slice is zero,
  so its output never reaches the residual stream."""
  layers = list(params["layers"])
  layers[layer] = {**layers[layer], "out": layers[layer]["out"].at[head].set(0.0)}
  return {**params, "layers": layers}


class HeadsTrainer(train.Trainer):
  """Two cross-entropies, one per relation, each over its own answer tokens;
  metrics per head and relation on a fixed eval batch. Initialization and
  measurement compile with ``FAST_COMPILE``, training chunks with
  ``CHUNK_COMPILE``."""

  init_compiler_options = FAST_COMPILE
  measure_compiler_options = FAST_COMPILE
  chunk_compiler_options = CHUNK_COMPILE

  def relation_outputs(self, logits_BxV, batch) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Per relation: (mean cross-entropy, correct_B) over its answer tokens."""
    out = {}
    for r, target_B in zip(RELATIONS, (batch.target_B, batch.prev_target_B)):
      ids = self.task.output_ids(r)
      label_V = np.zeros(self.task.vocab_size, np.int32)
      label_V[ids] = np.arange(len(ids))
      logits_BxN = logits_BxV[:, ids]
      label_B = jnp.asarray(label_V)[target_B]
      loss = optax.softmax_cross_entropy_with_integer_labels(logits_BxN, label_B).mean()
      out[r] = (loss, jnp.argmax(logits_BxN, -1) == label_B)
    return out

  def loss_fn(self, params, batch):
    logits_BxTxV, trace = model_lib.forward(params, batch.tokens_BxT, self.config.model)
    logits_BxV = logits_BxTxV[:, -1]
    rel = self.relation_outputs(logits_BxV, batch)
    return sum(loss for loss, _ in rel.values()), (logits_BxV, trace)

  def measure_one(self, state: train.TrainState) -> dict:
    params, cfg = state.params, self.config
    batch = self.batch(state)
    loss, (logits_BxV, _) = self.loss_fn(params, batch)
    rel = self.relation_outputs(logits_BxV, batch)
    out = {"loss": loss, "accuracy": jnp.mean(rel["select"][1] & rel["prev"][1]),
           "diverged": state.diverged, "diverged_step": state.diverged_step}
    ev = self.task.sample(jax.random.PRNGKey(EVAL_KEY + cfg.seed), cfg.eval_batch_size)
    ev_loss, (ev_logits_BxV, trace) = self.loss_fn(params, ev)
    base = self.relation_outputs(ev_logits_BxV, ev)
    out["eval_loss"] = ev_loss
    out["eval_accuracy"] = jnp.mean(base["select"][1] & base["prev"][1])
    for r, (r_loss, correct_B) in base.items():
      out[f"eval_loss/{r}"] = r_loss
      out[f"eval_accuracy/{r}"] = jnp.mean(correct_B)
    t = ev.tokens_BxT.shape[1]
    targets = {"select": ev.target_pos_B, "prev": ev.prev_pos_B}
    for l, lt in enumerate(trace.layers):
      w_BxHxS = lt.attn_weights_BxHxTxT[:, :, -1, :]
      for r, pos_B in targets.items():
        on_BxS = jnp.arange(t)[None, :] == pos_B[:, None]
        share_H = jnp.mean(jnp.sum(jnp.where(on_BxS[:, None], w_BxHxS, 0.0), -1), 0)
        for h in range(w_BxHxS.shape[1]):
          out[f"share/{r}/L{l}/H{h}"] = share_H[h]
      for h in range(w_BxHxS.shape[1]):
        _, (abl_logits_BxV, _) = self.loss_fn(ablate_head(params, l, h), ev)
        for r, (abl_loss, _) in self.relation_outputs(abl_logits_BxV, ev).items():
          out[f"ablation/{r}/L{l}/H{h}"] = abl_loss - base[r][0]
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


# ---- check and run ------------------------------------------------------------
def check(config, results_dir) -> None:
  config_lib.validate_training_config(config)
  try:
    heads = parse_heads(config.n_heads_list)
  except ValueError:
    heads = []
  if not heads or min(heads) < 1 or len(set(heads)) != len(heads):
    raise ConfigError(f"config.n_heads_list={config.n_heads_list!r} is out of range; "
                      "accepted: distinct comma-separated integers >= 1, e.g. '1,2,4,8'")
  config_lib.require_choice(config, "head_budget", HEAD_BUDGETS)
  if config.model.n_heads != 1:
    raise ConfigError(f"config.model.n_heads={config.model.n_heads!r}: set per condition "
                      "by this study; accepted: 1 (choose head counts with "
                      "config.n_heads_list)")
  if config.head_budget == "total":
    bad = [h for h in heads if config.model.d_model % h]
    if bad:
      raise ConfigError(f"config.n_heads_list={config.n_heads_list!r} has head counts "
                        f"{bad} that do not divide config.model.d_model="
                        f"{config.model.d_model}; accepted with head_budget='total': "
                        "divisors of d_model")
  for h in heads:
    config_lib.validate_model(condition_config(config, h).model)
  config_lib.require_at_least(config, ("eval_batch_size", "task.n_adverbs",
                                       "task.n_manners"))
  if not 0 < config.separation_threshold < 1:
    raise ConfigError(f"config.separation_threshold={config.separation_threshold!r} is "
                      "out of range; accepted: 0 < threshold < 1")
  results.check_writable(results_dir)


def run(config, results_dir: str | pathlib.Path, progress: bool = True) -> pathlib.Path:
  """Trains every head count, then writes summary, figures and report."""
  task = relation_tasks.make_two_relation_task(config.task, config.seed)
  mesh = train.seed_mesh(config.num_seeds)
  run_dir = runner.start_run(results_dir, EXP, config, mesh)
  results.write_json(run_dir / "task.json", task.tables())
  writer = results.MetricsWriter(run_dir / "metrics.jsonl")
  try:
    for n_heads in parse_heads(config.n_heads_list):
      trainer = train.make_trainer(condition_config(config, n_heads), task=task,
                                   trainer_class=HeadsTrainer)
      runner.train_and_log(trainer, writer, progress, fields={"n_heads": n_heads},
                           desc=f"{n_heads} heads")
  finally:
    writer.close()
  finish(run_dir)
  return run_dir


# ---- analysis (from saved files) ----------------------------------------------
def head_matrix(rows, prefix: str, n_heads: int, n_layers: int, index: int) -> np.ndarray:
  """[seeds, layers * heads, relations] of ``prefix/<relation>/L<l>/H<h>``."""
  return np.stack([
      np.stack([results.metric_table(rows, f"{prefix}/{r}/L{l}/H{h}", n_heads=n_heads)[1][:, index]
                for l in range(n_layers) for h in range(n_heads)], 1)
      for r in RELATIONS], -1)


def normalized(m_SxKxR: np.ndarray) -> np.ndarray:
  """Each relation's non-negative profile over heads, summing to 1; NaN
  where the relation's total is below ``MIN_DAMAGE``."""
  m = np.clip(m_SxKxR, 0.0, None)
  total_SxR = m.sum(1, keepdims=True)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total_SxR > MIN_DAMAGE, m / total_SxR, np.nan)


def separation(m_SxKxR: np.ndarray) -> np.ndarray:
  """Per seed, 1 - sum_h min(p_select(h), p_prev(h)): the share of the two
  relations' profiles over heads that does not overlap."""
  p = normalized(m_SxKxR)
  return 1.0 - np.sum(np.minimum(p[..., 0], p[..., 1]), 1)


def distinct_top_heads(d_SxKxR: np.ndarray) -> np.ndarray:
  """Per seed, 1 if the head whose ablation hurts ``select`` most is not the
  one that hurts ``prev`` most, else 0 (NaN for a diverged seed)."""
  out = (np.argmax(np.nan_to_num(d_SxKxR[..., 0], nan=-np.inf), 1)
         != np.argmax(np.nan_to_num(d_SxKxR[..., 1], nan=-np.inf), 1)).astype(float)
  return np.where(np.all(np.isfinite(d_SxKxR), (1, 2)), out, np.nan)


def participation(d_SxKxR: np.ndarray) -> np.ndarray:
  """[seeds, relations]: effective number of heads carrying each relation,
  1 / sum_h p_r(h)^2 of the normalized ablation profile."""
  p = normalized(d_SxKxR)
  return 1.0 / np.sum(p ** 2, 1)


def head_roles(d_SxKxR: np.ndarray) -> list[str | None]:
  """Per seed, the assignment pattern: each head is 'select', 'prev', 'both'
  or 'neither' by whether its share of each relation's ablation damage is at
  least its uniform share 1/K; the pattern counts heads per role."""
  p = normalized(d_SxKxR)
  k = d_SxKxR.shape[1]
  out = []
  for p_KxR in p:
    if not np.all(np.isfinite(p_KxR)):
      out.append(None)
      continue
    big = p_KxR >= 1.0 / k - 1e-9
    roles = collections.Counter(
        {(True, False): "select", (False, True): "prev", (True, True): "both",
         (False, False): "neither"}[(bool(a), bool(b))] for a, b in big)
    out.append(", ".join(f"{roles[r]} {r}" for r in ("select", "prev", "both", "neither")
                         if roles[r]))
  return out


def baselines(tables: dict) -> dict[str, float]:
  """Per relation, the best accuracy without attention: what the verb alone
  predicts of the selected noun's colour, and the most common manner."""
  return {"select": tables["verb_only_accuracy"],
          "prev": tables["manner_majority_accuracy"]}


def condition_summary(rows, config, tables) -> dict[str, dict[str, Any]]:
  """Per head count: per-seed values (and their description) at the end."""
  n_layers = config.model.n_layers
  chance = baselines(tables)
  out = {}
  for n in parse_heads(config.n_heads_list):
    share = head_matrix(rows, "share", n, n_layers, -1)
    share0 = head_matrix(rows, "share", n, n_layers, 0)
    damage = head_matrix(rows, "ablation", n, n_layers, -1)
    acc = {r: results.metric_table(rows, f"eval_accuracy/{r}", n_heads=n)[1][:, -1]
           for r in RELATIONS}
    n_eff = participation(damage)
    per = {
        "acc_select": acc["select"], "acc_prev": acc["prev"],
        "acc_over_chance_min": np.minimum(acc["select"] - chance["select"],
                                          acc["prev"] - chance["prev"]),
        "eval_loss": results.metric_table(rows, "eval_loss", n_heads=n)[1][:, -1],
        "separation_attn": separation(share),
        "separation_attn_init": separation(share0),
        "separation_ablation": separation(damage),
        "distinct_top_heads": distinct_top_heads(damage),
        "n_eff_select": n_eff[:, 0], "n_eff_prev": n_eff[:, 1],
    }
    entry: dict[str, Any] = {k: {**stats.describe(v), "per_seed": v} for k, v in per.items()}
    patterns = head_roles(damage)
    counts = collections.Counter(p for p in patterns if p is not None)
    modal, modal_n = counts.most_common(1)[0] if counts else (None, 0)
    entry.update({
        "d_head": condition_config(config, n).model.d_head,
        "chance": chance,
        "patterns": patterns, "modal_pattern": modal, "modal_fraction": (
            modal_n / len([p for p in patterns if p is not None]) if modal else None),
        "share_SxKxR": share, "ablation_SxKxR": damage,
    })
    div = results.metric_table(rows, "diverged", n_heads=n)[1][:, -1]
    div_step = results.metric_table(rows, "diverged_step", n_heads=n)[1][:, -1]
    entry["diverged_seeds"] = [{"seed": int(i), "step": int(div_step[i])}
                               for i in np.flatnonzero(div > 0)]
    out[str(n)] = entry
  return out


def _heads(n) -> str:
  return f"{n} head" if int(n) == 1 else f"{n} heads"


def _seeds(entry, key) -> np.ndarray:
  return np.asarray([np.nan if v is None else v for v in entry[key]["per_seed"]], float)


def evaluate_claims(per: dict, config) -> list[dict[str, Any]]:
  out = []
  thr = config.separation_threshold
  for n, e in per.items():
    v = _seeds(e, "acc_over_chance_min")
    out.append(stats.claim(
        name=f"prerequisite: the model with {_heads(n)} learns both relations",
        quote="(not a claim; head roles mean little if the task is not learned)", source="-",
        measured=(f"{_heads(n)}: final eval accuracy minus the best accuracy without "
                  "attention (verb-only for select, most common manner for prev), the "
                  "smaller over the two relations"),
        values=v, verdict=stats.verdict_greater(v)))
  for n, e in per.items():
    if int(n) < 2:
      continue
    for key, what in (("separation_attn", "attention share"),
                      ("separation_ablation", "ablation damage")):
      v = _seeds(e, key)
      out.append(stats.claim(
          name=f"{n} heads divide the two relations between them ({what})",
          quote=QUOTE, source=ARTICLE_000,
          measured=(f"{n} heads, end: separation index 1 - Σ_h min(p_select(h), "
                    f"p_prev(h)) of each relation's {what} normalized over heads (0: "
                    f"every head serves both alike, 1: no head serves both); supported "
                    f"if the 95% CI lies above {thr}"),
          values=v, verdict=stats.verdict_greater(v, thr)))
    v = _seeds(e, "distinct_top_heads")
    out.append(stats.claim(
        name=f"{n} heads: the split recurs across seeds",
        quote=QUOTE, source=ARTICLE_000,
        measured=(f"{n} heads: fraction of seeds in which the head whose ablation hurts "
                  "`select` most differs from the one that hurts `prev` most; supported "
                  "if the 95% CI lies above 0.5"),
        values=v, verdict=stats.verdict_greater(v, 0.5)))
  return out


def summarize(rows, config, tables) -> dict[str, Any]:
  per = condition_summary(rows, config, tables)
  return {
      "num_seeds": config.num_seeds,
      "final_step": max(r["step"] for r in rows),
      "head_budget": config.head_budget,
      "diverged_seeds": {n: e["diverged_seeds"] for n, e in per.items() if e["diverged_seeds"]},
      "claims": evaluate_claims(per, config),
      "conditions": per,
  }


# ---- figures ------------------------------------------------------------------
def _color(i, n):
  return plotting.plt.get_cmap("viridis")(i / max(1, n - 1) * 0.9)


def accuracy_figure(rows, config, chance):
  plt = plotting.plt
  heads = parse_heads(config.n_heads_list)
  fig, axes = plt.subplots(1, len(RELATIONS), figsize=(3.4 * len(RELATIONS), 2.7),
                           sharey=True)
  n = 0
  for ax, r in zip(axes, RELATIONS):
    for i, h in enumerate(heads):
      steps, acc = results.metric_table(rows, f"eval_accuracy/{r}", n_heads=h)
      n = plotting.band(ax, steps, acc, _color(i, len(heads)), _heads(h))
    ax.axhline(chance[r], color="0.5", ls=":", lw=1, label="best without attention")
    ax.set_title(REL_TITLE[r], fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylim(0, 1.02)
  axes[0].set_ylabel("eval accuracy")
  axes[-1].legend(frameon=False, fontsize=7)
  plotting.seed_note(fig, n)
  return fig


def heatmap_figure(per, config, key, title, cmap):
  """Rows: head counts; columns: seeds; each cell a head x relation heatmap."""
  plt = plotting.plt
  heads = parse_heads(config.n_heads_list)
  n_layers = config.model.n_layers
  seeds = config.num_seeds
  fig = plt.figure(figsize=(1.0 * seeds + 1.2, 0.32 * sum(h * n_layers + 2 for h in heads) + 0.8))
  grid = fig.add_gridspec(len(heads), seeds + 1,
                          height_ratios=[h * n_layers + 2 for h in heads],
                          width_ratios=[1] * seeds + [0.15], top=0.94)
  for i, h in enumerate(heads):
    m = np.asarray(per[str(h)][key], float)
    vmax = 1.0 if key == "share_SxKxR" else max(np.nanmax(m), 1e-6)
    im = None
    for s in range(seeds):
      ax = fig.add_subplot(grid[i, s])
      im = ax.imshow(m[s], cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
      ax.set_xticks(range(len(RELATIONS)), RELATIONS if i == len(heads) - 1 else [""] * 2,
                    fontsize=6)
      k = m.shape[1]
      ax.set_yticks(range(k), [f"H{j}" for j in range(k)] if s == 0 else [""] * k,
                    fontsize=5)
      if i == 0:
        ax.set_title(f"seed {s}", fontsize=7)
      if s == 0:
        ax.set_ylabel(_heads(h), fontsize=7)
    cax = fig.add_subplot(grid[i, seeds])
    fig.colorbar(im, cax=cax).ax.tick_params(labelsize=5)
  fig.suptitle(title, fontsize=8, y=0.995)
  return fig


def separation_figure(per, config):
  plt = plotting.plt
  heads = parse_heads(config.n_heads_list)
  panels = (("separation_attn", "separation index\n(attention share)"),
            ("separation_ablation", "separation index\n(ablation damage)"),
            ("n_eff_select", "effective heads\ncarrying select"),
            ("n_eff_prev", "effective heads\ncarrying prev"))
  fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.6))
  for ax, (key, label) in zip(axes, panels):
    for i, h in enumerate(heads):
      v = _seeds(per[str(h)], key)
      x = i + np.linspace(-0.15, 0.15, len(v))
      ax.scatter(x, v, s=10, color=_color(i, len(heads)), alpha=0.7)
      mean, std = plotting.nan_mean_std(v)
      ax.errorbar(i + 0.3, mean, yerr=std, fmt="o", color=_color(i, len(heads)), ms=4,
                  capsize=2)
    if key.startswith("separation"):
      ax.axhline(config.separation_threshold, color="0.5", ls="--", lw=1)
      ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(range(len(heads)), [str(h) for h in heads])
    ax.set_xlabel("heads")
    ax.set_ylabel(label)
  fig.suptitle("At the end, per seed (dots) and mean ± 1 std; dashed: threshold", y=1.0)
  fig.tight_layout()
  return fig


def write_report(run_dir, saved, summary, figures) -> None:
  cfg = saved["config"]
  m = cfg["model"]
  per = summary["conditions"]
  budget = (f"n_heads × d_head fixed at d_model = {m['d_model']}"
            if cfg["head_budget"] == "total" else f"d_head fixed at {m['d_head']}")
  lines = [
      "# qkvjax `heads`: do attention heads specialize to different relations?", "",
      f"Run `{run_dir.name}`: {cfg['num_seeds']} seeds × {cfg['steps']} steps per head "
      f"count ({cfg['n_heads_list']}; {budget}); {m['n_layers']} layer(s), "
      f"d_model {m['d_model']}, MLP {m['mlp']}; {cfg['optim']['optimizer']} lr "
      f"{cfg['optim']['learning_rate']}, batch {cfg['batch_size']}; backend "
      f"{saved['backend']}, jax {saved['versions']['jax']}, commit {saved['git_commit']}.", "",
      "Task (`task.json`): nouns of distinct categories, an adverb, then a verb; at the "
      "verb the model answers two things, each from its own output tokens with its own "
      "cross-entropy: " + "; ".join(REL_TEXT.values()) + ". Measured on one fixed eval "
      f"batch of {cfg['eval_batch_size']} sequences: per head, the attention share of the "
      "final position on each relation's target, and the loss increase of each relation "
      "when that head alone is ablated (its W_O slice zeroed, inside the jit). Separation "
      "index: 1 − Σ_h min(p_select(h), p_prev(h)) with p_r relation r's profile over heads "
      "normalized to sum 1. Effects: mean ± std across seeds, 95% expanded-percentile "
      "bootstrap CI of the mean; *supported* when the CI lies above the stated threshold, "
      "*not supported* when below, *inconclusive* when it straddles.", "",
  ]
  lines += report.diverged_lines(summary["diverged_seeds"])
  lines += ["## Claims", ""] + report.claims_table(summary["claims"]) + [""]
  lines += ["## Quote tested", "", f"- “{QUOTE}” ({ARTICLE_000})", ""]
  lines += ["## Per head count (final values)", "",
            "| heads | d_head | accuracy select | accuracy prev | separation (attention) "
            "at init → end | separation (ablation) | distinct top heads | effective heads "
            "select / prev | modal assignment (share of seeds) |",
            "|---|---|---|---|---|---|---|---|---|"]
  for n, e in per.items():
    f = lambda k: report.fmt(e[k]["mean"])  # pylint: disable=cell-var-from-loop
    top = e["distinct_top_heads"]
    top_text = ("n/a" if top["mean"] is None
                else f"{int(round(top['mean'] * top['n']))}/{top['n']}")
    modal = ("n/a" if e["modal_pattern"] is None
             else f"{e['modal_pattern']} ({e['modal_fraction']:.0%})")
    lines.append(
        f"| {n} | {e['d_head']} | {report.effect_cell(e['acc_select'])} | "
        f"{report.effect_cell(e['acc_prev'])} | {f('separation_attn_init')} → "
        f"{f('separation_attn')} | {report.effect_cell(e['separation_ablation'])} | "
        f"{top_text} | {f('n_eff_select')} / {f('n_eff_prev')} | {report.cell(modal)} |")
  chance = next(iter(per.values()))["chance"]
  lines += ["", f"Best accuracy without attention: select {chance['select']:.3f} (the "
            f"verb alone), prev {chance['prev']:.3f} (most common manner). Assignment: a "
            "head takes a relation when its share of "
            "that relation's ablation damage is at least its uniform share 1/heads. Every "
            "seed's pattern is in `summary.json`.", ""]
  lines += ["## Figures", ""]
  lines += report.figure_lines(figures)
  lines += report.redraw_lines(run_dir)
  results.write_atomic(run_dir / "report.md", "\n".join(lines))


def finish(run_dir: pathlib.Path) -> None:
  """Summary, figures and report from the saved files alone."""
  run_dir = pathlib.Path(run_dir)
  saved, config, rows = results.load_run(run_dir)
  tables = results.read_json(run_dir / "task.json")
  summary = summarize(rows, config, tables)
  results.write_json(run_dir / "summary.json", summary)
  per = summary["conditions"]
  chance = baselines(tables)
  figures = {
      "Eval accuracy of each relation during training": plotting.save(
          accuracy_figure(rows, config, chance), run_dir, "accuracy"),
      "Head × relation: attention share of the final position, per seed": plotting.save(
          heatmap_figure(per, config, "share_SxKxR",
                         "Attention share of the final position on each relation's target "
                         "(rows: heads; end of training)", "Blues"), run_dir, "heatmap_attention"),
      "Head × relation: loss increase when the head alone is ablated, per seed": plotting.save(
          heatmap_figure(per, config, "ablation_SxKxR",
                         "Loss increase of each relation (nats) when the head alone is "
                         "ablated (end of training; colour scale per head count)", "Reds"),
          run_dir, "heatmap_ablation"),
      "Separation index and effective heads per relation": plotting.save(
          separation_figure(per, config), run_dir, "separation"),
  }
  write_report(run_dir, saved, summary, figures)

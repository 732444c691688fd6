"""`tied`: do Q, K and V need three independent matrices?

Four conditions of the same one-layer model, each trained over all seeds in one
vmapped program: separate W_Q, W_K, W_V (``none``), W_K = W_Q (``qk``),
W_Q = W_K = W_V (``qkv``) and no value projection (``no_value``: V is the
layer input). Two tasks on one language: the selection task (a verb selects a
noun: an asymmetric verb -> noun relation) and the match task (a probe noun
finds the other noun of its category: a symmetric relation).

With W_K = W_Q the score q_i . k_j = h_i^T W W^T h_j is symmetric and, by
Cauchy-Schwarz, no key of norm <= ||W^T h_i|| outscores the token itself. We
measure what that does at the prediction position: the attention share on
itself, how often its own score beats the target's, and the target/self key-norm
ratio the model must grow to escape.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from qkvjax import config as config_lib
from qkvjax import model as model_lib
from qkvjax import plotting
from qkvjax import relation_tasks
from qkvjax import report
from qkvjax import results
from qkvjax import runner
from qkvjax import stats
from qkvjax import tasks
from qkvjax import train
from qkvjax.config import ConfigError

EXP = "tied"
# Model overrides of each condition.
CONDITIONS = {
    "none": {"tie": "none", "value_proj": True},
    "qk": {"tie": "qk", "value_proj": True},
    "qkv": {"tie": "qkv", "value_proj": True},
    "no_value": {"tie": "none", "value_proj": False},
}
LABELS = {"none": "separate $W_Q, W_K, W_V$", "qk": "$W_K = W_Q$",
          "qkv": "$W_Q = W_K = W_V$", "no_value": "no $W_V$ (V = input)"}
PLAIN = {"none": "separate W_Q, W_K, W_V", "qk": "W_K = W_Q", "qkv": "W_Q = W_K = W_V",
         "no_value": "no W_V (V = layer input)"}
COLORS = {"none": "k", "qk": plotting.MATRIX_COLORS["key"],
          "qkv": plotting.MATRIX_COLORS["value"], "no_value": plotting.MATRIX_COLORS["out"]}
TASKS = {"selection": tasks.make_selection_task, "match": relation_tasks.make_match_task}
TASK_TEXT = {
    "selection": "selection (verb -> noun it selects; asymmetric)",
    "match": "match (probe noun -> the noun of its category; symmetric)",
}
TASK_TITLE = {"selection": "selection: verb -> the noun it selects\n(asymmetric)",
              "match": "match: probe noun -> the noun of its category\n(symmetric)"}
SHORT = {"none": "separate", "qk": "W_K = W_Q", "qkv": "W_Q = W_K = W_V", "no_value": "no W_V"}
# The bar for "the task is learned": the best accuracy from the last token alone.
BASELINE_KEY = {"selection": "verb_only_accuracy", "match": "probe_only_accuracy"}
EVAL_KEY = 20_000  # the eval batch is drawn from PRNGKey(EVAL_KEY + config.seed)
# Compile time dominates these small runs (measured on 2 CPU cores, per
# condition): initialization and measurement are one-shot programs that
# compile several times faster without XLA's backend optimizations (init 6 s ->
# 1 s, measure 5.7 s -> 1.6 s) and run about as fast; training chunks compile
# at level 1 (7.2 s -> 3.9 s) and run as fast as at the default level.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
CHUNK_COMPILE = {"xla_backend_optimization_level": 1}

ARTICLE_000 = "../shared/seeds/000 (structural guarantees: isolation of linear transformations)"
ARTICLE_002 = "../shared/seeds/002 (why three separate representations?)"
QUOTE_INDEPENDENT = ("Q/K/V come from three completely independent matrix "
                     "multiplications")
QUOTE_SEPARATE = ("This separation enables more expressive attention patterns than "
                  "using the same representation for all three roles.")


def parse_list(text: str) -> list[str]:
  return [s.strip() for s in text.split(",") if s.strip()]


def condition_config(config: ml_collections.ConfigDict,
                     condition: str) -> ml_collections.ConfigDict:
  """A copy of ``config`` with the condition's tying applied to ``model``."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.model.update(CONDITIONS[condition])
  return c


# ---- metrics (inside the jit) -------------------------------------------------
def self_attention_metrics(trace: model_lib.Trace, batch: tasks.Batch) -> dict:
  """At the prediction (last) position, per layer and head: attention on
  itself and on the ground-truth key, how often its own score is >= the
  target's, and mean ||k_target|| / ||k_self||. Per layer: the relative
  asymmetry ||S - S^T|| / ||S|| of the full score matrix (0 when W_K = W_Q)."""
  out = {}
  t = batch.tokens_BxT.shape[1]
  is_target_BxS = jnp.arange(t)[None, :] == batch.target_pos_B[:, None]
  for l, lt in enumerate(trace.layers):
    s_BxHxTxS = lt.attn_logits_BxHxTxT
    out[f"score_asym/L{l}"] = (jnp.linalg.norm(s_BxHxTxS - jnp.swapaxes(s_BxHxTxS, -1, -2))
                               / (jnp.linalg.norm(s_BxHxTxS) + 1e-12))
    w_BxHxS = lt.attn_weights_BxHxTxT[:, :, -1, :]
    z_BxHxS = s_BxHxTxS[:, :, -1, :]
    tgt = is_target_BxS[:, None, :]
    z_target_BxH = jnp.sum(jnp.where(tgt, z_BxHxS, 0.0), -1)
    k_norm_BxSxH = jnp.linalg.norm(lt.key_BxTxHxD, axis=-1)
    k_target_BxH = jnp.sum(jnp.where(is_target_BxS[..., None], k_norm_BxSxH, 0.0), 1)
    ratio_BxH = k_target_BxH / (k_norm_BxSxH[:, -1] + 1e-12)
    for h in range(w_BxHxS.shape[1]):
      key = f"L{l}/H{h}"
      out[f"attn_self/{key}"] = jnp.mean(w_BxHxS[:, h, -1])
      out[f"attn_target/{key}"] = jnp.mean(
          jnp.sum(jnp.where(is_target_BxS, w_BxHxS[:, h], 0.0), -1))
      out[f"self_ge_target/{key}"] = jnp.mean(z_BxHxS[:, h, -1] >= z_target_BxH[:, h])
      out[f"key_norm_ratio/{key}"] = jnp.mean(ratio_BxH[:, h])
  return out


class TiedTrainer(train.Trainer):
  """The default loss; slim metrics on the train batch and a fixed eval batch.
  Initialization and measurement compile with ``FAST_COMPILE``, training
  chunks with ``CHUNK_COMPILE``."""

  init_compiler_options = FAST_COMPILE
  measure_compiler_options = FAST_COMPILE
  chunk_compiler_options = CHUNK_COMPILE

  def measure_one(self, state: train.TrainState) -> dict:
    """Loss and accuracy on the train batch; on the eval batch, accuracy, the
    accuracy left when attention is made uniform (every score times 0: no
    selection, values kept), and ``self_attention_metrics``."""
    batch = self.batch(state)
    loss, (logits_BxV, _) = self.loss_fn(state.params, batch)
    ev = self.task.sample(jax.random.PRNGKey(EVAL_KEY + self.config.seed),
                          self.config.eval_batch_size)
    ev_loss, (ev_logits_BxV, ev_trace) = self.loss_fn(state.params, ev)
    uniform_cfg = ml_collections.ConfigDict({**self.config.model.to_dict(), "attn_scale": "0"})
    uniform_logits_BxV = model_lib.forward(state.params, ev.tokens_BxT, uniform_cfg)[0][:, -1]
    out = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits_BxV, -1) == batch.target_B),
        "eval_loss": ev_loss,
        "eval_accuracy": jnp.mean(jnp.argmax(ev_logits_BxV, -1) == ev.target_B),
        "uniform_attn/accuracy": jnp.mean(jnp.argmax(uniform_logits_BxV, -1) == ev.target_B),
        "diverged": state.diverged,
        "diverged_step": state.diverged_step,
    }
    out.update(self_attention_metrics(ev_trace, ev))
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def score_sample(trainer: train.Trainer, state: train.TrainState) -> dict[str, Any]:
  """Scores and weights of every layer and head on one sample sequence, from
  the first seed that did not diverge."""
  seed = runner.first_finite_seed(state)
  params = jax.tree.map(lambda x: np.asarray(x[seed]), state.params)
  sample = jax.jit(trainer.task.sample, static_argnums=1, compiler_options=FAST_COMPILE)
  batch = sample(jax.random.PRNGKey(10_000 + trainer.config.seed), 1)
  logits, trace = jax.jit(lambda p, t: model_lib.forward(p, t, trainer.config.model),
                          compiler_options=FAST_COMPILE)(params, batch.tokens_BxT)
  vocab = trainer.task.vocab
  return {
      "seed": seed,
      "tokens": [vocab[t] for t in np.asarray(batch.tokens_BxT[0])],
      "target_pos": int(batch.target_pos_B[0]),
      "target": vocab[int(batch.target_B[0])],
      "predicted": vocab[int(np.argmax(logits[0, -1]))],
      "scores_LxHxTxS": np.stack([np.asarray(lt.attn_logits_BxHxTxT[0]) for lt in trace.layers]),
      "weights_LxHxTxS": np.stack([np.asarray(lt.attn_weights_BxHxTxT[0])
                                    for lt in trace.layers]),
  }


# ---- check and run ------------------------------------------------------------
def check(config, results_dir) -> None:
  config_lib.validate_training_config(config)
  conds, task_names = parse_list(config.conditions), parse_list(config.tasks)
  bad = [c for c in conds if c not in CONDITIONS]
  if not conds or bad or len(set(conds)) != len(conds):
    raise ConfigError(f"config.conditions={config.conditions!r} is out of range; accepted: "
                      f"distinct comma-separated names from {', '.join(CONDITIONS)}")
  bad = [t for t in task_names if t not in TASKS]
  if not task_names or bad or len(set(task_names)) != len(task_names):
    raise ConfigError(f"config.tasks={config.tasks!r} is out of range; accepted: "
                      f"distinct comma-separated names from {', '.join(TASKS)}")
  if config.model.tie != "none" or not config.model.value_proj:
    raise ConfigError(f"config.model.tie={config.model.tie!r}, config.model.value_proj="
                      f"{config.model.value_proj!r}: set per condition by this study; "
                      "accepted: 'none' and True (choose variants with config.conditions)")
  for cond in conds:
    config_lib.validate_model(condition_config(config, cond).model)
  if "match" in task_names and config.task.nouns_per_category < 2:
    raise ConfigError(f"config.task.nouns_per_category={config.task.nouns_per_category!r} "
                      "is out of range for the match task; accepted: an integer >= 2")
  if not 0 < config.threshold <= 1:
    raise ConfigError(f"config.threshold={config.threshold!r} is out of range; "
                      "accepted: 0 < threshold <= 1")
  config_lib.require_at_least(config, ("eval_batch_size",))
  for name in ("acc_margin", "speed_margin"):
    if not config[name] >= 0:
      raise ConfigError(f"config.{name}={config[name]!r} is out of range; accepted: a number >= 0")
  results.check_writable(results_dir)


def run(config, results_dir: str | pathlib.Path, progress: bool = True) -> pathlib.Path:
  """Trains every (task, condition), then writes summary, figures and report."""
  conds, task_names = parse_list(config.conditions), parse_list(config.tasks)
  task_objs = {name: TASKS[name](config.task, config.seed) for name in task_names}
  mesh = train.seed_mesh(config.num_seeds)
  run_dir = runner.start_run(results_dir, EXP, config, mesh)
  results.write_json(run_dir / "task.json", {n: t.tables() for n, t in task_objs.items()})
  writer = results.MetricsWriter(run_dir / "metrics.jsonl")
  samples = {}
  try:
    for task_name, task in task_objs.items():
      for cond in conds:
        trainer = train.make_trainer(condition_config(config, cond), task=task,
                                     trainer_class=TiedTrainer)
        state = runner.train_and_log(trainer, writer, progress,
                                     fields={"task": task_name, "condition": cond},
                                     desc=f"{task_name}/{cond}")
        samples[f"{task_name}/{cond}"] = score_sample(trainer, state)
  finally:
    writer.close()
  results.write_json(run_dir / "score_samples.json", samples)
  finish(run_dir)
  return run_dir


# ---- summary (from saved files) ----------------------------------------------
def _table(rows, key, task, cond):
  return results.metric_table(rows, key, task=task, condition=cond)


def _heads_mean(rows, prefix, task, cond, layer, n_heads, reduce=np.mean):
  """[seeds, steps] of ``reduce`` over heads of ``prefix/L<layer>/H*``."""
  tabs = [_table(rows, f"{prefix}/L{layer}/H{h}", task, cond)[1] for h in range(n_heads)]
  return reduce(np.stack(tabs), axis=0)


def steps_to_threshold(steps: np.ndarray, acc_SxN: np.ndarray, threshold: float,
                       censor: float) -> np.ndarray:
  """Per seed, the first logged step whose accuracy is >= ``threshold``;
  ``censor`` if never reached, NaN if the seed diverged before reaching it."""
  out = np.full(acc_SxN.shape[0], np.nan)
  for s, acc in enumerate(acc_SxN):
    hit = np.flatnonzero(acc >= threshold)
    if hit.size:
      out[s] = steps[hit[0]]
    elif np.all(np.isfinite(acc)):
      out[s] = censor
  return out


def condition_summary(rows, config) -> dict[str, dict[str, dict[str, Any]]]:
  """Per task and condition: per-seed values (and their description) of the
  quantities the claims and figures use."""
  m = config.model
  last = m.n_layers - 1
  censor = config.steps + config.log_every
  out = {}
  for task in parse_list(config.tasks):
    out[task] = {}
    for cond in parse_list(config.conditions):
      steps, acc = _table(rows, "eval_accuracy", task, cond)
      per = {
          "eval_accuracy": acc[:, -1],
          "eval_loss": _table(rows, "eval_loss", task, cond)[1][:, -1],
          "uniform_attn_accuracy": _table(rows, "uniform_attn/accuracy", task, cond)[1][:, -1],
          "steps_to_threshold": steps_to_threshold(steps, acc, config.threshold, censor),
          "attn_self_init": _heads_mean(rows, "attn_self", task, cond, last, m.n_heads)[:, 0],
          "attn_self": _heads_mean(rows, "attn_self", task, cond, last, m.n_heads)[:, -1],
          "attn_target_best": _heads_mean(rows, "attn_target", task, cond, last, m.n_heads,
                                          np.max)[:, -1],
          "self_ge_target": _heads_mean(rows, "self_ge_target", task, cond, last,
                                        m.n_heads)[:, -1],
          "key_norm_ratio": _heads_mean(rows, "key_norm_ratio", task, cond, last,
                                        m.n_heads)[:, -1],
          "score_asym": _table(rows, f"score_asym/L{last}", task, cond)[1][:, -1],
      }
      entry = {k: {**stats.describe(v), "per_seed": v} for k, v in per.items()}
      entry["reached"] = int(np.sum(per["steps_to_threshold"] < censor))
      div = _table(rows, "diverged", task, cond)[1][:, -1]
      div_step = _table(rows, "diverged_step", task, cond)[1][:, -1]
      entry["diverged_seeds"] = [{"seed": int(i), "step": int(div_step[i])}
                                 for i in np.flatnonzero(div > 0)]
      out[task][cond] = entry
  return out


def _per_seed(summary, task, cond, key) -> np.ndarray:
  return np.asarray([np.nan if v is None else v
                     for v in summary[task][cond][key]["per_seed"]], float)


def baselines(tables: dict) -> dict[str, float]:
  """Per task, the best accuracy from the last token alone (verb or probe)."""
  return {task: t[BASELINE_KEY[task]] for task, t in tables.items()}


def evaluate_claims(per: dict, config, bars: dict[str, float]) -> list[dict[str, Any]]:
  """Verdicts. Conditions are compared seed by seed: seed i of every condition
  shares its data stream and the initial W_Q (and whatever else is untied).
  ``bars``: per task, the accuracy the baseline must beat (``baselines``)."""
  out = []
  conds = parse_list(config.conditions)
  for task in parse_list(config.tasks):
    if "none" not in conds:
      break
    acc = _per_seed(per, task, "none", "eval_accuracy")
    who = "verb" if task == "selection" else "probe"
    out.append(stats.claim(
        name=f"prerequisite: separate W_Q, W_K, W_V learn the {task} task",
        quote="(not a claim; comparisons mean little if the baseline fails)", source="-",
        measured=(f"{task}: final eval accuracy minus the best accuracy from the {who} "
                  f"alone ({bars[task]:.3f})"),
        values=acc - bars[task], verdict=stats.verdict_greater(acc - bars[task])))
    for cond in (c for c in conds if c != "none"):
      quote, source = ((QUOTE_SEPARATE, ARTICLE_002) if cond in ("qk", "qkv")
                       else (QUOTE_INDEPENDENT, ARTICLE_000))
      slow = np.log2(_per_seed(per, task, cond, "steps_to_threshold")
                     / _per_seed(per, task, "none", "steps_to_threshold"))
      out.append(stats.claim(
          name=f"{PLAIN[cond]} learns the {task} task more slowly",
          quote=quote, source=source,
          measured=(f"{task}: log2(steps to {config.threshold:.0%} eval accuracy with "
                    f"{PLAIN[cond]} / with separate matrices), paired by seed; a seed that "
                    f"never reaches it counts as {config.steps + config.log_every} steps; "
                    f"supported if the 95% CI lies above {config.speed_margin}"),
          values=slow, verdict=stats.verdict_greater(slow, config.speed_margin)))
      cost = (_per_seed(per, task, "none", "eval_accuracy")
              - _per_seed(per, task, cond, "eval_accuracy"))
      out.append(stats.claim(
          name=f"{PLAIN[cond]} ends less accurate on the {task} task",
          quote=quote, source=source,
          measured=(f"{task}: eval accuracy after {config.steps} steps with separate "
                    f"matrices minus with {PLAIN[cond]}, paired by seed; supported if the "
                    f"95% CI lies above {config.acc_margin}"),
          values=cost, verdict=stats.verdict_greater(cost, config.acc_margin)))
    for cond in (c for c in conds if c in ("qk", "qkv")):
      extra = (_per_seed(per, task, cond, "attn_self")
               - _per_seed(per, task, "none", "attn_self"))
      out.append(stats.claim(
          name=f"{PLAIN[cond]} makes the prediction position attend to itself ({task})",
          quote=("(consequence of W_K = W_Q: symmetric scores, and a token scores itself "
                 "at least as high as any key of no larger norm)"),
          source="issue 3",
          measured=(f"{task}: attention share of the last position on itself (mean over "
                    f"heads, last layer) at the end, {PLAIN[cond]} minus separate"),
          values=extra, verdict=stats.verdict_greater(extra)))
  task_names = parse_list(config.tasks)
  if "none" in conds and {"selection", "match"} <= set(task_names):
    for cond in (c for c in conds if c in ("qk", "qkv")):
      slow = {t: np.log2(_per_seed(per, t, cond, "steps_to_threshold")
                         / _per_seed(per, t, "none", "steps_to_threshold"))
              for t in ("selection", "match")}
      gap = slow["selection"] - slow["match"]
      out.append(stats.claim(
          name=f"{PLAIN[cond]} costs less when the relation is symmetric",
          quote=QUOTE_SEPARATE, source=ARTICLE_002,
          measured=("slow-down log2(steps ratio to separate matrices) on the selection "
                    "task minus on the match task, paired by seed (> 0: tying hurts the "
                    "asymmetric relation more)"),
          values=gap, verdict=stats.verdict_greater(gap)))
  return out


def summarize(rows, config, tables) -> dict[str, Any]:
  per = condition_summary(rows, config)
  bars = baselines(tables)
  return {
      "num_seeds": config.num_seeds,
      "final_step": max(r["step"] for r in rows),
      "threshold": config.threshold,
      "last_token_only_accuracy": bars,
      "diverged_seeds": {f"{t}/{c}": per[t][c]["diverged_seeds"]
                         for t in per for c in per[t] if per[t][c]["diverged_seeds"]},
      "claims": evaluate_claims(per, config, bars),
      "conditions": per,
  }


# ---- figures ------------------------------------------------------------------
def _seed_note(fig, n):
  fig.text(0.99, 0.005, f"mean ± 1 std over {n} seeds", ha="right", va="bottom",
           fontsize=7, color="0.4")


def accuracy_figure(rows, config, bars):
  plt = plotting.plt
  task_names, conds = parse_list(config.tasks), parse_list(config.conditions)
  fig, axes = plt.subplots(1, len(task_names), figsize=(4.0 * len(task_names), 2.7),
                           squeeze=False, sharey=True)
  n = 0
  for ax, task in zip(axes[0], task_names):
    for cond in conds:
      steps, acc = _table(rows, "eval_accuracy", task, cond)
      n = plotting.band(ax, steps, acc, COLORS[cond], LABELS[cond])
    ax.axhline(config.threshold, color="0.5", ls="--", lw=1, label="threshold")
    ax.axhline(bars[task], color="0.5", ls=":", lw=1, label="last token alone")
    ax.set_title(TASK_TITLE[task])
    ax.set_xlabel("step")
    ax.set_ylim(0, 1.02)
  axes[0][0].set_ylabel("eval accuracy")
  axes[0][-1].legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  _seed_note(fig, n)
  return fig


def _dots(ax, per, task, conds, key, censor=None):
  for i, cond in enumerate(conds):
    v = _per_seed(per, task, cond, key)
    x = i + np.linspace(-0.15, 0.15, len(v))
    cens = np.zeros_like(v, bool) if censor is None else v >= censor
    ax.scatter(x[~cens], v[~cens], s=10, color=COLORS[cond], alpha=0.7)
    ax.scatter(x[cens], v[cens], s=10, facecolors="none", edgecolors=COLORS[cond])
    mean, std = plotting.nan_mean_std(v)
    ax.errorbar(i + 0.3, mean, yerr=std, fmt="o", color=COLORS[cond], ms=4, capsize=2)
  ax.set_xticks(range(len(conds)), [LABELS[c] for c in conds], rotation=25, ha="right",
                fontsize=7)


def outcome_figure(per, config):
  plt = plotting.plt
  task_names, conds = parse_list(config.tasks), parse_list(config.conditions)
  fig, axes = plt.subplots(2, len(task_names), figsize=(4.0 * len(task_names), 5.2),
                           squeeze=False)
  censor = config.steps + config.log_every
  for j, task in enumerate(task_names):
    _dots(axes[0][j], per, task, conds, "steps_to_threshold", censor)
    axes[0][j].axhline(censor, color="0.5", ls=":", lw=1)
    axes[0][j].set_title(TASK_TITLE[task])
    _dots(axes[1][j], per, task, conds, "eval_accuracy")
    axes[1][j].set_ylim(0, 1.02)
  axes[0][0].set_ylabel(f"steps to {config.threshold:.0%} eval accuracy\n"
                        "(hollow, dotted line: not reached)")
  axes[1][0].set_ylabel("final eval accuracy")
  fig.suptitle("Dots: seeds; bars: mean ± 1 std", y=1.0)
  fig.tight_layout()
  return fig


def self_attention_figure(rows, config):
  plt = plotting.plt
  task_names, conds = parse_list(config.tasks), parse_list(config.conditions)
  m = config.model
  last = m.n_layers - 1
  panels = [("attn_self", np.mean, "attention on itself\n(mean over heads)"),
            ("attn_target", np.max, "attention on the target\n(best head)"),
            ("self_ge_target", np.mean, "P(own score >= target's)\n(mean over heads)"),
            ("key_norm_ratio", np.mean, "||k_target|| / ||k_self||\n(mean over heads)")]
  fig, axes = plt.subplots(len(panels), len(task_names),
                           figsize=(4.2 * len(task_names), 2.1 * len(panels)),
                           squeeze=False, sharex=True)
  n = 0
  for j, task in enumerate(task_names):
    for i, (prefix, reduce, ylabel) in enumerate(panels):
      ax = axes[i][j]
      for cond in conds:
        steps, _ = _table(rows, "eval_accuracy", task, cond)
        vals = _heads_mean(rows, prefix, task, cond, last, m.n_heads, reduce)
        n = plotting.band(ax, steps, vals, COLORS[cond], LABELS[cond])
      if j == 0:
        ax.set_ylabel(ylabel)
    axes[0][j].set_title(TASK_TITLE[task])
    axes[-1][j].set_xlabel("step")
  axes[0][-1].legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  fig.suptitle(f"At the prediction position (layer {last}), eval batch", y=1.0)
  _seed_note(fig, n)
  fig.tight_layout()
  return fig


def score_figure(samples, config, key="scores_LxHxTxS"):
  """Rows: tasks; columns: condition x head (last layer); one sample sequence."""
  plt = plotting.plt
  task_names, conds = parse_list(config.tasks), parse_list(config.conditions)
  h = config.model.n_heads
  fig, axes = plt.subplots(len(task_names), len(conds) * h,
                           figsize=(1.9 * len(conds) * h, 2.7 * len(task_names) + 0.5),
                           squeeze=False)
  for i, task in enumerate(task_names):
    for j, cond in enumerate(conds):
      s = samples[f"{task}/{cond}"]
      mats = np.asarray(s[key])[-1]
      t = mats.shape[-1]
      for head in range(h):
        ax = axes[i][j * h + head]
        mat = mats[head]
        if key == "scores_LxHxTxS":
          lim = np.max(np.abs(mat)) + 1e-9
          ax.imshow(mat, cmap="RdBu_r", vmin=-lim, vmax=lim)
        else:
          ax.imshow(mat, cmap="Blues", vmin=0, vmax=1)
        ax.add_patch(plt.Rectangle((s["target_pos"] - 0.5, t - 1.5), 1, 1, fill=False,
                                   edgecolor="#d62728", lw=1.5))
        ax.set_xticks(range(t), s["tokens"], rotation=90, fontsize=6)
        ax.set_yticks(range(t), s["tokens"] if j + head == 0 else [""] * t, fontsize=6)
        ax.set_title(f"{task}\n{SHORT[cond]}, head {head}", fontsize=7)
  what = ("scores (scaled q.k, before the causal mask; symmetric when W_K = W_Q)"
          if key == "scores_LxHxTxS" else "attention weights")
  fig.suptitle(f"Last layer {what} on one sample per task; red box: prediction position "
               "-> target", fontsize=8, y=1.0)
  fig.tight_layout()
  return fig


def write_report(run_dir, saved, summary, figures) -> None:
  cfg = saved["config"]
  m = cfg["model"]
  per = summary["conditions"]
  lines = [
      "# qkvjax `tied`: must Q, K and V come from three independent matrices?", "",
      f"Run `{run_dir.name}`: {cfg['num_seeds']} seeds × {cfg['steps']} steps per "
      f"(task, condition); {m['n_layers']} layer(s) × {m['n_heads']} heads, d_model "
      f"{m['d_model']}, d_head {m['d_head']}, MLP {m['mlp']}, "
      f"{'causal' if m['causal'] else 'bidirectional'}; {cfg['optim']['optimizer']} lr "
      f"{cfg['optim']['learning_rate']}, batch {cfg['batch_size']}; backend "
      f"{saved['backend']}, jax {saved['versions']['jax']}, commit {saved['git_commit']}.", "",
      "Conditions: " + "; ".join(f"`{c}` = {PLAIN[c]}" for c in parse_list(cfg["conditions"]))
      + ". Tasks (`task.json`): " + "; ".join(TASK_TEXT[t] for t in parse_list(cfg["tasks"]))
      + ". Accuracy is measured on one fixed eval batch of "
      f"{cfg['eval_batch_size']} sequences at every logging point ({cfg['log_every']} steps). "
      "Seed i of every condition shares its data stream and initial W_Q, so conditions "
      "are compared seed by seed. Effects: mean ± std across seeds, 95% expanded-"
      "percentile bootstrap CI of the mean; *supported* when the CI lies above the stated "
      "margin, *not supported* when below it, *inconclusive* when it straddles.", "",
  ]
  lines += report.diverged_lines(summary["diverged_seeds"])
  lines += ["## Claims", ""] + report.claims_table(summary["claims"]) + [""]
  lines += ["## Quotes tested", "",
            f"- “{QUOTE_INDEPENDENT}” ({ARTICLE_000})",
            f"- “{QUOTE_SEPARATE}” ({ARTICLE_002})", ""]
  lines += ["## Per condition (final values)", "",
            "| task | condition | eval accuracy | accuracy with uniform attention | "
            "steps to threshold (reached) | self-attention at init | self-attention at end "
            "| target attention (best head) | P(own score ≥ target's) | ‖k_target‖/‖k_self‖ "
            "| score asymmetry |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
  for task, conds in per.items():
    for cond, e in conds.items():
      cell = lambda k: report.effect_cell(e[k])  # pylint: disable=cell-var-from-loop
      lines.append(
          f"| {task} | {PLAIN[cond]} | {cell('eval_accuracy')} | "
          f"{report.fmt(e['uniform_attn_accuracy']['mean'])} | "
          f"{cell('steps_to_threshold')} ({e['reached']}/{e['eval_accuracy']['n']}) | "
          f"{report.fmt(e['attn_self_init']['mean'])} | {report.fmt(e['attn_self']['mean'])} | "
          f"{report.fmt(e['attn_target_best']['mean'])} | "
          f"{report.fmt(e['self_ge_target']['mean'])} | "
          f"{report.fmt(e['key_norm_ratio']['mean'])} | {report.fmt(e['score_asym']['mean'])} |")
  bars = summary["last_token_only_accuracy"]
  lines += ["", "Best accuracy from the last token alone: "
            + ", ".join(f"{t} {v:.3f}" for t, v in bars.items())
            + ". Uniform attention: every score multiplied by 0 at evaluation (values "
            "kept), so the accuracy left needs no selection. Attention columns: at the "
            "prediction (last) position of the last layer, on the eval batch; self-attention "
            "is the mean over heads. Score asymmetry is ‖S − Sᵀ‖/‖S‖ of the full (pre-mask) "
            "score matrix: 0 when W_K = W_Q.", ""]
  lines += ["## Figures", ""]
  lines += report.figure_lines(figures)
  lines += report.redraw_lines(run_dir)
  results.write_atomic(run_dir / "report.md", "\n".join(lines))


def finish(run_dir: pathlib.Path) -> None:
  """Summary, figures and report from the saved files alone."""
  run_dir = pathlib.Path(run_dir)
  saved, config, rows = results.load_run(run_dir)
  summary = summarize(rows, config, results.read_json(run_dir / "task.json"))
  results.write_json(run_dir / "summary.json", summary)
  figures = {
      "Eval accuracy during training": plotting.save(
          accuracy_figure(rows, config, summary["last_token_only_accuracy"]), run_dir,
          "accuracy"),
      "Steps to threshold and final accuracy, per seed": plotting.save(
          outcome_figure(summary["conditions"], config), run_dir, "outcomes"),
      "What W_K = W_Q does at the prediction position": plotting.save(
          self_attention_figure(rows, config), run_dir, "self_attention"),
  }
  sample_path = run_dir / "score_samples.json"
  if sample_path.exists():
    samples = results.read_json(sample_path)
    figures["Score matrices on a sample sequence"] = plotting.save(
        score_figure(samples, config), run_dir, "score_matrices")
    figures["Attention weights on a sample sequence"] = plotting.save(
        score_figure(samples, config, "weights_LxHxTxS"), run_dir, "attention_maps")
  write_report(run_dir, saved, summary, figures)

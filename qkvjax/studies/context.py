"""Are Q, K, V recomputed for every context while W_Q, W_K, W_V stay fixed?

Article 001: "apple" can mean a fruit or a company, "so the Q, K, and V
vectors for 'apple' will be different depending on its surrounding words".
The model is trained on ``qkvjax.context_task``: at an ambiguous word it
predicts the word's sense, which only the context reveals. At every logging
point, on a balanced probe set (each word at each position in many contexts
of each sense), and for each layer, the ambiguous word's q, k, v (and, for
reference, the layer's input) are measured for

- ``ctx_spread``: RMS distance between the word's vectors in two contexts
  (same word, same position), relative to their RMS norm;
- ``sense_share``: the share of that context variation that lies between
  the two senses (between-sense over within-group variance);
- ``probe_acc``: held-out accuracy of a closed-form ridge probe for the sense.

Layer 1 sees only token and position (its input is the LayerNorm'd
embedding), so there the three are exactly 0, 0 and 0.5 whatever the
weights; the claim can only hold from layer 2 on.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from qkvjax import config as config_lib
from qkvjax import context_task
from qkvjax import model as model_lib
from qkvjax import plotting
from qkvjax import report
from qkvjax import results
from qkvjax import runner
from qkvjax import stats
from qkvjax import train
from qkvjax.metrics import QKV

plt = plotting.plt  # pyplot, after plotting has chosen the Agg backend

ARTICLE_001 = "../shared/seeds/001 (Q asks, K indexes, V carries content)"
QUOTE = ("the Q, K, and V vectors for “apple” will be different depending on its "
         "surrounding words")
REPS = QKV + ("resid",)  # "resid": the layer's input (residual stream, before its LayerNorm)
CONDITION = "trained"
CHANCE = 0.5  # accuracy from the word and its position alone: a coin for the sense
PROBE_STREAM = 0x7FFFFFFF  # fold_in data for the probe set; training steps never reach it


# ---- metrics (pure, inside the jitted, seed-vmapped measurement) ------------
def conjugate_gradient(a_FxF: jax.Array, b_F: jax.Array, iters: int) -> jax.Array:
  """Solves a_FxF w = b_F for symmetric positive definite a_FxF with matmuls
  only. (LAPACK-backed solves hung the CPU backend of jax 0.10.2 when a dozen
  sat in one seed-vmapped program: jnp.linalg.solve at 2 seeds, cho_solve at 8.)"""
  tol = 1e-12 * (b_F @ b_F) + 1e-30  # stop once converged: no 0/0 updates
  def step(_, carry):
    w, r, p, rr = carry
    ap = a_FxF @ p
    going = rr > tol
    alpha = jnp.where(going, rr / jnp.where(going, p @ ap, 1.0), 0.0)
    w, r = w + alpha * p, r - alpha * ap
    rr_new = r @ r
    beta = jnp.where(going, rr_new / jnp.where(going, rr, 1.0), 0.0)
    return w, r, r + beta * p, rr_new
  return jax.lax.fori_loop(0, iters, step, (jnp.zeros_like(b_F), b_F, b_F, b_F @ b_F))[0]


def ridge_probe_accuracy(x_NxF: jax.Array, label_N: jax.Array, fit_N: np.ndarray,
                         ridge: float) -> jax.Array:
  """Held-out accuracy of a least-squares (ridge) probe for a binary label.

  Features are standardized with the fitted rows' mean and std; the probe is
  w = (Z'Z + ridge * n I)^-1 Z'(y - ybar) with y = +-1 (labels 0/1), fitted on the rows
  where ``fit_N`` (static) is True and scored on the others."""
  fit, held = np.flatnonzero(fit_N), np.flatnonzero(~fit_N)
  x = x_NxF.astype(jnp.float32)
  mu_F, sd_F = x[fit].mean(0), x[fit].std(0)
  z_NxF = (x - mu_F) / (sd_F + 1e-6 * jnp.mean(sd_F) + 1e-20)
  y_N = 2.0 * label_N.astype(jnp.float32) - 1.0
  y_bar = y_N[fit].mean()
  z_fit = z_NxF[fit]
  gram_FxF = z_fit.T @ z_fit + ridge * len(fit) * jnp.eye(x.shape[1])
  w_F = conjugate_gradient(gram_FxF, z_fit.T @ (y_N[fit] - y_bar), 2 * x.shape[1])
  predicted = (z_NxF[held] @ w_F + y_bar) > 0
  return jnp.mean(predicted == (label_N[held] > 0))


def context_variation(x_NxF: jax.Array, group_N: jax.Array, sense_N: jax.Array,
                      n_groups: int) -> tuple[jax.Array, jax.Array]:
  """``(spread, sense_share)`` of vectors measured for one word at one
  position (a group) in many contexts.

  spread = sqrt(2 * mean ||x - mean_group||^2) / sqrt(mean ||x||^2): the RMS
  distance between two contexts' vectors relative to the RMS norm.
  sense_share = mean ||mean_(group,sense) - mean_group||^2 / mean ||x - mean_group||^2:
  how much of that variation separates the senses (0 when there is none)."""
  x = x_NxF.astype(jnp.float32)
  # Measured from each group's first row, so identical vectors give exactly
  # 0 rather than the round-off of a mean (the statistics are shift-free).
  first_G = jax.ops.segment_min(jnp.arange(x.shape[0]), group_N, n_groups)
  shifted = x - x[first_G[group_N]]
  def means(ids, n):
    total = jax.ops.segment_sum(shifted, ids, n)
    count = jax.ops.segment_sum(jnp.ones_like(ids, jnp.float32), ids, n)
    return (total / jnp.maximum(count, 1.0)[:, None])[ids]
  dev_g = shifted - means(group_N, n_groups)
  between = means(group_N * 2 + sense_N, 2 * n_groups) - means(group_N, n_groups)
  sq_norm = jnp.mean(jnp.sum(x**2, -1))
  within = jnp.mean(jnp.sum(dev_g**2, -1))
  spread = jnp.sqrt(2.0 * within / (sq_norm + 1e-30))
  # The floor makes 0/0 (layer 1: identical vectors) a 0.
  share = jnp.mean(jnp.sum(between**2, -1)) / (within + 1e-10 * sq_norm + 1e-30)
  return spread, share


def at_position(x_BxTx___: jax.Array, pos_B: jax.Array) -> jax.Array:
  """Row b's vector at position pos_B[b], flattened: [B, F]."""
  x = x_BxTx___[jnp.arange(x_BxTx___.shape[0]), pos_B]
  return x.reshape(x.shape[0], -1)


def context_metrics(trace: model_lib.Trace, batch: context_task.ContextBatch,
                    task: context_task.ContextTask, fit_N: np.ndarray,
                    ridge: float) -> dict[str, jax.Array]:
  """Per layer and per representation of the ambiguous word: spread across
  contexts, sense share, probe accuracy; and the attention it pays to cues."""
  out = {}
  n_groups = task.n_ambiguous * len(task.positions)
  group_N = task.group(batch)
  pos_N = batch.target_pos_B
  t = batch.tokens_BxT.shape[1]
  for l, lt in enumerate(trace.layers):
    for name, x in zip(REPS, (lt.query_BxTxHxD, lt.key_BxTxHxD, lt.value_BxTxHxD,
                              lt.resid_in_BxTxM)):
      x_NxF = at_position(x, pos_N)
      spread, share = context_variation(x_NxF, group_N, batch.sense_B, n_groups)
      out[f"ctx_spread/L{l}/{name}"] = spread
      out[f"sense_share/L{l}/{name}"] = share
      out[f"probe_acc/L{l}/{name}"] = ridge_probe_accuracy(x_NxF, batch.sense_B,
                                                           fit_N, ridge)
    w_NxHxS = lt.attn_weights_BxHxTxT[jnp.arange(len(pos_N)), :, pos_N, :]
    cues_NxH = jnp.sum(jnp.where(batch.cue_BxT[:, None, :], w_NxHxS, 0.0), -1)
    out[f"attn_cues/L{l}"] = jnp.mean(cues_NxH)
    for h in range(cues_NxH.shape[1]):
      out[f"attn_cues/L{l}/H{h}"] = jnp.mean(cues_NxH[:, h])
  # What uniform attention over the visible positions would put on the cues.
  visible_NxS = jnp.arange(t)[None, :] <= pos_N[:, None]
  out["attn_cues_uniform"] = jnp.mean(
      jnp.sum(batch.cue_BxT & visible_NxS, -1) / jnp.sum(visible_NxS, -1))
  return out


class ContextTrainer(train.Trainer):
  """Predicts at the ambiguous word, not the last position; measures on the
  seed's fixed probe set."""

  task: context_task.ContextTask

  def loss_fn(self, params, batch: context_task.ContextBatch):
    logits_BxTxV, trace = model_lib.forward(params, batch.tokens_BxT, self.config.model)
    logits_BxV = at_position(logits_BxTxV, batch.target_pos_B)
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits_BxV, batch.target_B).mean()
    return loss, (logits_BxV, trace)

  def probe_set(self, state: train.TrainState):
    return self.task.probe_set(jax.random.fold_in(state.data_key, PROBE_STREAM),
                               self.config.probe.replicates)

  def measure_one(self, state: train.TrainState) -> dict[str, jax.Array]:
    batch = self.batch(state)
    loss, (logits_BxV, _) = self.loss_fn(state.params, batch)
    probe_batch, fit_N = self.probe_set(state)
    probe_loss, (probe_logits_NxV, trace) = self.loss_fn(state.params, probe_batch)
    out = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits_BxV, -1) == batch.target_B),
        "probe_set_loss": probe_loss,
        "probe_set_accuracy": jnp.mean(
            jnp.argmax(probe_logits_NxV, -1) == probe_batch.target_B),
    }
    out.update(context_metrics(trace, probe_batch, self.task, fit_N,
                               self.config.probe.ridge))
    out["diverged"] = state.diverged
    out["diverged_step"] = state.diverged_step
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


# ---- check, run -------------------------------------------------------------
def _require(ok: bool, path: str, value, accepted: str) -> None:
  if not ok:
    raise config_lib.ConfigError(
        f"config.{path}={value!r} is out of range; accepted: {accepted}")


def check(config, results_dir) -> None:
  config_lib.validate_common(config)
  config_lib.validate_model(config.model)
  config_lib.validate_optim(config.optim)
  t, p = config.task, config.probe
  config_lib.require_at_least(config, ("task.n_ambiguous", "task.n_cues",
                                       "task.n_neutral", "task.min_pos"))
  _require(t.seq_len > t.min_pos, "task.seq_len", t.seq_len,
           f"an integer > task.min_pos ({t.min_pos})")
  _require(0.0 <= t.cue_prob <= 1.0, "task.cue_prob", t.cue_prob, "0 <= value <= 1")
  _require(config.model.n_layers >= 2, "model.n_layers", config.model.n_layers,
           "an integer >= 2 (layer 1 is compared with later layers)")
  _require(p.replicates >= 2 and p.replicates % 2 == 0, "probe.replicates",
           p.replicates, "an even integer >= 2 (half fit the probe, half held out)")
  for f in ("ridge", "spread_margin", "acc_margin"):
    _require(p[f] > 0, f"probe.{f}", p[f], "a number > 0")
  _require(p.acc_margin < 0.5, "probe.acc_margin", p.acc_margin, "0 < value < 0.5")
  results.check_writable(results_dir)


def run(config, results_dir: str | pathlib.Path, progress: bool = True) -> pathlib.Path:
  """Trains the seeds vmapped, then writes metrics, vectors, summary, figures."""
  task = context_task.make_context_task(config.task)
  trainer = train.make_trainer(config, task=task, trainer_class=ContextTrainer)
  run_dir = runner.start_run(results_dir, "context", config, trainer.mesh)
  results.write_json(run_dir / "task.json", task.tables())
  writer = results.MetricsWriter(run_dir / "metrics.jsonl")
  try:
    state = runner.train_and_log(trainer, writer, progress, fields={"condition": CONDITION})
  finally:
    writer.close()
  results.write_json(run_dir / "vectors_sample.json", vectors_sample(trainer, state))
  finish(run_dir)
  return run_dir


def vectors_sample(trainer: ContextTrainer, state: train.TrainState,
                   n_contexts: int = 64) -> dict[str, Any]:
  """For the figures: 2-D PCA coordinates of the first word's q, k, v at its
  last position, in ``n_contexts`` contexts of each sense, per layer, from
  one seed's final parameters. Coordinates are divided by the vectors' RMS
  norm, so spreads compare across layers."""
  seed = runner.first_finite_seed(state)
  params = jax.tree.map(lambda x: np.asarray(x[seed]), state.params)
  task = trainer.task
  sense = np.repeat([0, 1], n_contexts)
  batch = task.build(jax.random.PRNGKey(10_000 + trainer.config.seed),
                     jnp.zeros(2 * n_contexts, jnp.int32),
                     jnp.full(2 * n_contexts, task.seq_len - 1, jnp.int32), jnp.asarray(sense))
  _, trace = jax.jit(lambda p, t: model_lib.forward(p, t, trainer.config.model))(
      params, batch.tokens_BxT)
  coords = {}
  for l, lt in enumerate(trace.layers):
    for name, x in zip(QKV, (lt.query_BxTxHxD, lt.key_BxTxHxD, lt.value_BxTxHxD)):
      x_NxF = np.asarray(at_position(x, batch.target_pos_B), np.float64)
      centered = x_NxF - x_NxF.mean(0)
      _, _, vt = np.linalg.svd(centered, full_matrices=False)
      rms = np.sqrt(np.mean(np.sum(x_NxF**2, -1)))
      coords[f"L{l}/{name}"] = (centered @ vt[:2].T / rms).tolist()
  return {"seed": seed, "word": task.words[0], "position": task.seq_len - 1,
          "sense": sense.tolist(), "senses": list(context_task.DOMAINS),
          "examples": [[task.vocab[i] for i in np.asarray(batch.tokens_BxT[j])]
                       for j in (0, n_contexts)],
          "coords": coords}


# ---- summary, claims, figures, report (from saved files only) --------------
def _table(rows, key) -> np.ndarray:
  """[num_seeds, n_points] values of one metric (NaN once a seed diverged)."""
  return results.metric_table(rows, key, condition=CONDITION)[1]


def _min_over_qkv(rows, prefix: str, layer: int, index: int) -> np.ndarray:
  return np.min([_table(rows, f"{prefix}/L{layer}/{name}")[:, index] for name in QKV], 0)


def evaluate_claims(rows: list[dict[str, Any]], config) -> list[dict[str, Any]]:
  """One entry per claim, per layer where the issue asks for layers."""
  n_layers, p = config.model.n_layers, config.probe
  out = []
  acc = _table(rows, "probe_set_accuracy")[:, -1]
  out.append(stats.claim(
      name="prerequisite: the sense is resolved from context",
      quote="(not a claim; the other verdicts mean little if the model fails)",
      source="-",
      measured=(f"final accuracy on the probe set minus {CHANCE} (the best accuracy "
                "from the word and its position alone)"),
      values=acc - CHANCE, verdict=stats.verdict_greater(acc - CHANCE)))
  for l in range(n_layers):
    spread = _min_over_qkv(rows, "ctx_spread", l, -1)
    out.append(stats.claim(
        name=f"layer {l + 1}: the ambiguous word's q, k, v differ between contexts",
        quote=QUOTE, source=ARTICLE_001,
        measured=("smallest over q, k, v of the RMS distance between the word's vectors "
                  "in two contexts (same word, same position) over their RMS norm, at "
                  f"the end; supported if the 95% CI lies above {p.spread_margin}, not "
                  "supported if below"),
        values=spread, verdict=stats.verdict_greater(spread, p.spread_margin)))
  for l in range(n_layers):
    gain = _min_over_qkv(rows, "probe_acc", l, -1) - CHANCE
    out.append(stats.claim(
        name=f"layer {l + 1}: the sense (fruit or company) is readable from q, k, v",
        quote=("“apple”’s K will help determine this relevance, and its V will carry "
               "the specific information (either about the fruit or the company)"),
        source=ARTICLE_001,
        measured=("smallest over q, k, v of a ridge probe's held-out sense accuracy, "
                  f"minus {CHANCE}, at the end; supported if the 95% CI lies above "
                  f"{p.acc_margin}, not supported if below"),
        values=gain, verdict=stats.verdict_greater(gain, p.acc_margin)))
  for l in range(1, n_layers):
    rise = _min_over_qkv(rows, "sense_share", l, -1) - _min_over_qkv(rows, "sense_share", l, 0)
    out.append(stats.claim(
        name=(f"layer {l + 1}: training makes the context-dependence of q, k, v "
              "sense-specific"),
        quote=("the Q and K vectors will be different each time, depending on whether "
               "“apple” is referring to a fruit or a tech company"),
        source=ARTICLE_001,
        measured=("smallest over q, k, v of the sense share of their context variation "
                  "(between-sense / within-group variance), end minus step 0"),
        values=rise, verdict=stats.verdict_greater(rise)))
  return out


def summarize(rows: list[dict[str, Any]], config) -> dict[str, Any]:
  keys = [k for k in rows[0] if k not in ("step", "seed", "condition")]
  final = {}
  for key in keys:
    v = _table(rows, key)[:, -1]
    final[key] = {**stats.describe(v), "per_seed": v}
  diverged = _table(rows, "diverged")[:, -1]
  div_steps = _table(rows, "diverged_step")[:, -1]
  return {
      "num_seeds": int(len(diverged)),
      "final_step": max(r["step"] for r in rows),
      "diverged_seeds": [{"seed": int(i), "step": int(div_steps[i])}
                         for i in np.flatnonzero(diverged > 0)],
      "claims": evaluate_claims(rows, config),
      "at_init": at_init_note(rows, config.model.n_layers, config.probe.replicates),
      "final": {CONDITION: final},
  }


def at_init_note(rows, n_layers: int, replicates: int) -> str:
  """What a random network already does, from the step-0 metrics: context
  reaches later layers through layer 1's attention before any training."""
  def cell(prefix, l, index):
    v = np.mean([_table(rows, f"{prefix}/L{l}/{n}")[:, index] for n in QKV], 0)
    return f"{np.nanmean(v):.2f}"
  later = range(1, n_layers)
  return (
      "At step 0 (random weights) the later layers' q, k, v already change with "
      "context and a probe already reads the sense from them: layer by layer "
      f"(layers {', '.join(str(l + 1) for l in later)}), mean over q, k, v and seeds, "
      f"spread {' / '.join(cell('ctx_spread', l, 0) for l in later)}, probe accuracy "
      f"{' / '.join(cell('probe_acc', l, 0) for l in later)}, sense share "
      f"{' / '.join(cell('sense_share', l, 0) for l in later)}; at the end: spread "
      f"{' / '.join(cell('ctx_spread', l, -1) for l in later)}, probe accuracy "
      f"{' / '.join(cell('probe_acc', l, -1) for l in later)}, sense share "
      f"{' / '.join(cell('sense_share', l, -1) for l in later)} (vectors that ignore "
      f"the sense would give a share of about 1/(2 × {replicates} − 1) = "
      f"{1 / (2 * replicates - 1):.2f} from sampling alone). Recomputation per context "
      "comes with the architecture from layer 2 on; training mostly changes how much "
      "of that change is the sense.")


REP_COLORS = {**plotting.MATRIX_COLORS, "resid": "0.45"}
REP_LABELS = {"query": "q", "key": "k", "value": "v", "resid": "layer input"}


def _seed_note(fig, n: int) -> None:
  fig.text(0.99, 0.005, f"mean ± 1 std over {n} seeds", ha="right", va="bottom",
           fontsize=7, color="0.4")


def curves_figure(rows, n_layers: int, prefix: str, ylabel: str, title: str,
                  hline: float | None = None, ylim=None):
  """One panel per layer: ``prefix/L<l>/<rep>`` over training for q, k, v and
  the layer input."""
  fig, axes = plt.subplots(1, n_layers, figsize=(3.0 * n_layers, 2.6), squeeze=False,
                           sharey=True)
  n = 0
  for l, ax in enumerate(axes[0]):
    for name in REPS:
      steps, vals = results.metric_table(rows, f"{prefix}/L{l}/{name}", condition=CONDITION)
      n = plotting.band(ax, steps, vals, REP_COLORS[name], REP_LABELS[name])
    if hline is not None:
      ax.axhline(hline, color="0.5", ls=":", lw=1)
    if ylim is not None:
      ax.set_ylim(*ylim)
    ax.set_title(f"layer {l + 1}" + (" (sees token + position only)" if l == 0 else ""))
    ax.set_xlabel("step")
  axes[0][0].set_ylabel(ylabel)
  axes[0][-1].legend(frameon=False)
  fig.suptitle(title, y=1.03)
  _seed_note(fig, n)
  return fig


def layers_figure(rows, n_layers: int):
  """Headline: spread, sense share and probe accuracy against layer, at step
  0 (dashed) and at the end (solid)."""
  panels = (("ctx_spread", "spread across contexts\n(RMS distance / RMS norm)", None),
            ("sense_share", "sense share of that spread", None),
            ("probe_acc", "held-out probe accuracy\nfor the sense", CHANCE))
  fig, axes = plt.subplots(1, 3, figsize=(9.6, 2.8))
  layers = np.arange(1, n_layers + 1)
  n = 0
  for ax, (prefix, ylabel, chance) in zip(axes, panels):
    for name in REPS:
      for index, ls, marker, tag in ((0, "--", "o", " (step 0)"), (-1, "-", "s", "")):
        vals = np.stack([_table(rows, f"{prefix}/L{l}/{name}")[:, index]
                         for l in range(n_layers)], 1)
        n = int(np.sum(np.all(np.isfinite(vals), 1)))
        mean, std = plotting.nan_mean_std(vals)
        ax.errorbar(layers + (0.04 * REPS.index(name) - 0.06), mean, yerr=std, ls=ls,
                    marker=marker, ms=3.5, capsize=2, color=REP_COLORS[name],
                    mfc="white" if index == 0 else REP_COLORS[name],
                    label=REP_LABELS[name] + tag)
    if chance is not None:
      ax.axhline(chance, color="0.5", ls=":", lw=1)
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
  fig.suptitle("The ambiguous word's q, k, v across contexts, layer by layer "
               "(dashed: step 0, solid: end)", y=1.03)
  fig.tight_layout()
  axes[-1].legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  _seed_note(fig, n)
  return fig


def attention_figure(rows, n_layers: int):
  fig, ax = plt.subplots(figsize=(5.0, 2.8))
  cmap = plt.get_cmap("viridis")
  n = 0
  for l in range(n_layers):
    steps, vals = results.metric_table(rows, f"attn_cues/L{l}", condition=CONDITION)
    color = cmap(l / max(1, n_layers - 1))
    n = plotting.band(ax, steps, vals, color, f"layer {l + 1}: mean over heads")
    heads = [k for k in rows[0] if k.startswith(f"attn_cues/L{l}/H")]
    best = np.max([results.metric_table(rows, k, condition=CONDITION)[1] for k in heads], 0)
    ax.plot(steps, plotting.nan_mean_std(best)[0], color=color, ls="--", lw=1,
            label=f"layer {l + 1}: most cue-seeking head")
  steps, base = results.metric_table(rows, "attn_cues_uniform", condition=CONDITION)
  ax.plot(steps, np.nanmean(base, 0), color="0.5", ls=":", lw=1, label="uniform")
  ax.set_xlabel("step")
  ax.set_ylabel("attention from the ambiguous\nword onto cue words")
  ax.set_ylim(0, 1)
  ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  _seed_note(fig, n)
  return fig


def loss_figure(rows):
  fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.6))
  steps, loss = results.metric_table(rows, "loss", condition=CONDITION)
  n = plotting.band(axes[0], steps, loss, "k", "loss (training batch)", log=True)
  axes[0].set_ylabel("cross-entropy")
  for key, color, label in (("accuracy", "k", "training batch"),
                            ("probe_set_accuracy", "#9467bd", "probe set")):
    steps, acc = results.metric_table(rows, key, condition=CONDITION)
    plotting.band(axes[1], steps, acc, color, label)
  axes[1].axhline(CHANCE, color="0.5", ls=":", lw=1, label="word + position only")
  axes[1].set_ylabel("accuracy of the sense")
  axes[1].set_ylim(0, 1.02)
  axes[1].legend(frameon=False, fontsize=7)
  for ax in axes:
    ax.set_xlabel("step")
  _seed_note(fig, n)
  return fig


def vectors_figure(sample: dict[str, Any], n_layers: int):
  fig, axes = plt.subplots(3, n_layers, figsize=(2.4 * n_layers, 6.6), squeeze=False)
  sense = np.asarray(sample["sense"])
  colors = ("#2ca02c", "#7f7f7f")
  lim = max(1e-3, max(np.max(np.abs(np.asarray(c))) for c in sample["coords"].values()))
  for r, name in enumerate(QKV):
    for l in range(n_layers):
      ax = axes[r][l]
      xy = np.asarray(sample["coords"][f"L{l}/{name}"])
      for s, label in enumerate(sample["senses"]):
        ax.scatter(xy[sense == s, 0], xy[sense == s, 1], s=8, alpha=0.6,
                   color=colors[s], label=f"{sample['word']}: {label} context")
      ax.set_xlim(-1.1 * lim, 1.1 * lim)
      ax.set_ylim(-1.1 * lim, 1.1 * lim)
      ax.set_aspect("equal")
      ax.tick_params(labelsize=6)
      if r == 0:
        ax.set_title(f"layer {l + 1}")
      if l == 0:
        ax.set_ylabel(f"{REP_LABELS[name]}: PC2 / RMS norm")
  axes[0][-1].legend(frameon=False, fontsize=6, loc="upper right")
  fig.suptitle(f"seed {sample['seed']}: '{sample['word']}' at position "
               f"{sample['position']} in {len(sense) // 2} contexts of each sense "
               "(top-2 principal components)", fontsize=8, y=1.0)
  fig.tight_layout()
  return fig


def figures(run_dir: pathlib.Path, rows, config) -> dict[str, str]:
  n_layers = config.model.n_layers
  figs = {}
  figs["Spread, sense share and probe accuracy against layer"] = plotting.save(
      layers_figure(rows, n_layers), run_dir, "context_layers")
  figs["Spread of the ambiguous word's vectors across contexts"] = plotting.save(
      curves_figure(rows, n_layers, "ctx_spread", "RMS distance / RMS norm",
                    "How much the ambiguous word's vectors change with context "
                    "(same word, same position)"), run_dir, "context_spread")
  figs["Share of the context variation that separates the senses"] = plotting.save(
      curves_figure(rows, n_layers, "sense_share", "between-sense / within-group var.",
                    "How much of that change is the sense"), run_dir, "sense_share")
  figs["Linear probe for the sense"] = plotting.save(
      curves_figure(rows, n_layers, "probe_acc", "held-out accuracy",
                    "Ridge probe for the sense (fruit vs company), held-out contexts",
                    hline=CHANCE, ylim=(0.4, 1.02)), run_dir, "sense_probe")
  figs["Attention from the ambiguous word onto cue words"] = plotting.save(
      attention_figure(rows, n_layers), run_dir, "attention_cues")
  figs["Loss and accuracy"] = plotting.save(loss_figure(rows), run_dir, "loss_accuracy")
  sample = run_dir / "vectors_sample.json"
  if sample.exists():
    figs["One word's q, k, v in many contexts"] = plotting.save(
        vectors_figure(results.read_json(sample), n_layers), run_dir, "vectors_pca")
  return figs


def _per_layer_table(summary: dict[str, Any], n_layers: int) -> list[str]:
  final = summary["final"][CONDITION]
  cell = lambda key: (f"{report.fmt(final[key]['mean'])} ± {report.fmt(final[key]['std'])}"
                      if final[key]["mean"] is not None else "n/a")
  lines = ["| layer | vector | spread across contexts | sense share | probe accuracy |",
           "|---|---|---|---|---|"]
  for l in range(n_layers):
    for name in REPS:
      lines.append(f"| {l + 1} | {REP_LABELS[name]} | {cell(f'ctx_spread/L{l}/{name}')} | "
                   f"{cell(f'sense_share/L{l}/{name}')} | {cell(f'probe_acc/L{l}/{name}')} |")
  return lines


def write_report(run_dir: pathlib.Path, saved: dict[str, Any], summary: dict[str, Any],
                 figs: dict[str, str]) -> None:
  cfg = saved["config"]
  m, t = cfg["model"], cfg["task"]
  lines = [
      "# qkvjax: are Q, K, V recomputed for every context?",
      "",
      f"Run `{run_dir.name}`: {cfg['num_seeds']} seeds × {cfg['steps']} steps, "
      f"{m['n_layers']} layers × {m['n_heads']} heads, d_model {m['d_model']}, d_head "
      f"{m['d_head']}, {'causal' if m['causal'] else 'bidirectional'}, optimizer "
      f"{cfg['optim']['optimizer']} lr {cfg['optim']['learning_rate']}; backend "
      f"{saved['backend']} ({saved['device_kind']}), jax {saved['versions']['jax']}, "
      f"commit {saved['git_commit']}.",
      "",
      f"Task (`task.json`): {t['n_ambiguous']} ambiguous words with two senses each "
      "(apple: fruit or company, jaguar: cat or carmaker, ...) in sequences of "
      f"{t['seq_len']} words; the other words are cues of one domain (nature: eat, ripe, "
      "...; tech: stock, ceo, ...) or neutral, with at least one cue before the "
      "ambiguous word. At the ambiguous word the model predicts its sense. The weights "
      "are the same for every context by construction; what is measured is how the "
      "word's q, k, v vectors change with the context. Every measure is on a balanced "
      f"probe set: each word at each position in {cfg['probe']['replicates']} contexts "
      "of each sense (half fit the ridge probe, half are held out), fixed per seed.",
      "",
      "Layer 1's q, k, v are computed from LayerNorm(token embedding + position "
      "embedding) alone, so for the same word at the same position they are the same "
      "vector in every context — exactly (spread 0, sense share 0, probe accuracy 0.5 "
      "on the balanced set). Context reaches q, k, v only from layer 2 on, through "
      "layer 1's attention output in the residual stream.",
      "",
      "Effects are across seeds: mean ± std, 95% expanded-percentile bootstrap CI of the mean; a "
      "claim is *supported* when the CI lies on the claimed side of its threshold, *not "
      "supported* when it lies on the other, and *inconclusive* otherwise.",
      "",
  ]
  lines += report.diverged_lines(summary["diverged_seeds"])
  lines += ["## Claims", ""] + report.claims_table(summary["claims"]) + [""]
  lines += ["## Before training", "", summary["at_init"], ""]
  lines += ["## Quotes tested", ""]
  lines += report.quote_lines(summary["claims"])
  lines += ["", "## Per layer at the end (mean ± std across seeds)", ""]
  lines += _per_layer_table(summary, m["n_layers"]) + [""]
  lines += ["## Figures", ""]
  lines += report.figure_lines(figs)
  final = summary["final"][CONDITION]
  lines += ["## Final values", "", "| metric | mean ± std (95% CI) | seeds |", "|---|---|---|"]
  for key in ("loss", "accuracy", "probe_set_accuracy"):
    lines.append(f"| {key} | {report.effect_cell(final[key])} | {final[key]['n']} |")
  lines += report.redraw_lines(run_dir)
  results.write_atomic(run_dir / "report.md", "\n".join(lines))


def finish(run_dir: pathlib.Path) -> None:
  """Summary, figures and report from the saved files alone."""
  run_dir = pathlib.Path(run_dir)
  saved, config, rows = results.load_run(run_dir)
  summary = summarize(rows, config)
  results.write_json(run_dir / "summary.json", summary)
  write_report(run_dir, saved, summary, figures(run_dir, rows, config))

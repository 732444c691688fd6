"""``--exp=scaling``: does dividing by sqrt(d_k) keep softmax from saturating
and gradients from exploding?

For each d_head and each variant (scaled, unscaled, QK-norm) ``run`` measures
the model at initialization over ``init_seeds`` seeds, then trains it over a
grid of learning rates: the (learning rate, seed) pairs of a variant share one
vmapped program (``LRSweepTrainer``), whose compiled init and measurement
also serve the measurements at initialization (three compilations per
variant and d_head in all). Rows of ``metrics.jsonl`` carry
``phase`` ("init" or "train"), ``condition`` ("<variant>/d<d_head>"),
``variant``, ``d_head`` and, in training, ``learning_rate``.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from qkvjax import config as config_lib
from qkvjax import plotting
from qkvjax import report
from qkvjax import results
from qkvjax import runner
from qkvjax import signal
from qkvjax import stats
from qkvjax import train
from qkvjax.config import ConfigError

EXP = "scaling"
ARTICLE_000 = "../shared/seeds/000 (division of labour among Q, K, V)"
ARTICLE_001 = "../shared/seeds/001 (Q asks, K indexes, V carries content)"
ARTICLE_002 = "../shared/seeds/002 (the formula softmax(QK^T / sqrt(d_k)) V)"
ISSUE = "issue 3 (closed form: Var(q.k) = d_k for iid unit-variance entries)"
QKNORM_SOURCE = "QK-norm: Dehghani et al. 2023 (ViT-22B); not an explainer claim"

# What each variant sets in the ``model`` block.
VARIANTS = {
    "scaled": {"attn_scale": "inv_sqrt_dk", "qk_norm": False},
    "unscaled": {"attn_scale": "none", "qk_norm": False},
    "qk_norm": {"attn_scale": "inv_sqrt_dk", "qk_norm": True},
}
VARIANT_COLORS = {"scaled": "#1f77b4", "unscaled": "#d62728", "qk_norm": "#2ca02c"}
VARIANT_LABELS = {"scaled": "scaled 1/√d_k", "unscaled": "unscaled",
                  "qk_norm": "QK-norm + 1/√d_k"}


# ---- config ------------------------------------------------------------------
def d_heads(config) -> list[int]:
  return config_lib.parse_list(config, "d_heads", int,
                    "two or more distinct comma-separated integers in 1..4096",
                    lambda v: 1 <= v <= 4096)


def variants(config) -> list[str]:
  return config_lib.parse_list(config, "variants", str,
                    "distinct comma-separated names from " + ", ".join(VARIANTS),
                    lambda v: v in VARIANTS)


def learning_rates(config) -> list[float]:
  return config_lib.parse_list(config, "learning_rates", float,
                    "distinct comma-separated numbers > 0", lambda v: v > 0)


def variant_config(config, variant: str, d_head: int) -> ml_collections.ConfigDict:
  """The config one program runs with: the variant's model settings, the
  d_head, and a base learning rate of 1 (each run scales its update by its
  own rate, see ``LRSweepTrainer``)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.model.d_head = d_head
  for k, v in VARIANTS[variant].items():
    c.model[k] = v
  c.optim.learning_rate = 1.0
  return c


def check(config, results_dir) -> None:
  config_lib.validate_common(config)
  config_lib.require_at_least(config, ("init_seeds",), 2)
  if config.init_seeds > config_lib.MAX_SEEDS:
    raise ConfigError(f"config.init_seeds={config.init_seeds!r} is out of range; "
                      f"accepted: 2..{config_lib.MAX_SEEDS}")
  heads = d_heads(config)
  if len(heads) < 2:
    raise ConfigError(f"config.d_heads={config.d_heads!r} is out of range; accepted: "
                      "two or more distinct comma-separated integers in 1..4096")
  learning_rates(config)
  config_lib.validate_selection_task(config.task)
  for variant in variants(config):
    for d in heads:
      c = variant_config(config, variant, d)
      config_lib.validate_model(c.model)
      config_lib.validate_optim(c.optim)
  results.check_writable(results_dir, EXP)


# ---- training over a learning-rate grid in one program ------------------------
@dataclasses.dataclass
class LRSweepTrainer(signal.SignalTrainer):
  """Trains every (learning rate, seed) pair of ``config.learning_rates`` x
  ``num_seeds`` along one vmapped axis, learning-rate-major.

  The optimizer runs at rate 1 and its update is then multiplied by the run's
  own rate (``optax.inject_hyperparams(optax.scale)``, a per-run leaf of the
  optimizer state). That is exactly AdamW or SGD at that rate, and lets all
  rates share one compiled program. Every rate starts from the same seed keys,
  so comparisons across rates are paired."""

  def __post_init__(self):
    super().__post_init__()
    self.learning_rates = learning_rates(self.config)
    self.optimizer = optax.chain(
        self.optimizer, optax.inject_hyperparams(optax.scale)(step_size=1.0))
    self.init = jax.jit(jax.vmap(self.init_state_at_rate),
                        out_shardings=self._sharding, compiler_options=signal.FAST_COMPILE)

  def init_state_at_rate(self, key: jax.Array, rate: jax.Array) -> train.TrainState:
    state = self.init_state(key)
    base, scale = state.opt_state
    scale = scale._replace(hyperparams={**scale.hyperparams, "step_size": rate})
    return state._replace(opt_state=(base, scale))

  @property
  def num_runs(self) -> int:
    return len(self.learning_rates) * self.config.num_seeds

  def _init(self, keys: jax.Array, rates: jax.Array) -> train.TrainState:
    return self.init(jax.device_put(keys, self._sharding),
                     jax.device_put(rates, self._sharding))

  def init_states(self) -> train.TrainState:
    n = len(self.learning_rates)
    keys = jnp.tile(train.seed_keys(self.config.seed, self.config.num_seeds), (n, 1))
    rates = jnp.repeat(jnp.asarray(self.learning_rates, jnp.float32), self.config.num_seeds)
    return self._init(keys, rates)

  def measure_init_seeds(self, n: int) -> dict[str, np.ndarray]:
    """Metrics at initialization of seeds 0..n-1 (the training seeds first),
    measured ``num_runs`` at a time so the sweep's compiled init and measure
    programs are reused: no extra compilation. Maps names to [n] arrays."""
    size = self.num_runs
    keys = train.seed_keys(self.config.seed, -(-n // size) * size)
    rates = jnp.ones((size,), jnp.float32)  # not used by a measurement at step 0
    parts = [jax.device_get(self.measure(self._init(keys[i:i + size], rates)))
             for i in range(0, keys.shape[0], size)]
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}


class RateSplitWriter:
  """Writes a (learning rate, seed) axis as rows tagged ``learning_rate``
  with seeds 0..num_seeds-1, so ``results.metric_table`` reads each rate."""

  def __init__(self, writer: results.MetricsWriter, rates, num_seeds: int):
    self.writer, self.rates, self.num_seeds = writer, rates, num_seeds

  def write(self, step, metrics, fields=None) -> None:
    s = self.num_seeds
    for i, rate in enumerate(self.rates):
      part = {k: v[i * s:(i + 1) * s] for k, v in metrics.items()}
      self.writer.write(step, part, {**(fields or {}), "learning_rate": rate})


def condition_name(variant: str, d_head: int) -> str:
  return f"{variant}/d{d_head}"


def run(config, results_dir, progress: bool = True) -> pathlib.Path:
  """Measures at init, trains the grid, then writes summary, figures, report."""
  run_dir = runner.start_run(results_dir, EXP, config, train.seed_mesh(config.num_seeds))
  writer = results.MetricsWriter(run_dir / "metrics.jsonl")
  task_saved = False
  try:
    for d in d_heads(config):
      for variant in variants(config):
        fields = {"condition": condition_name(variant, d), "variant": variant, "d_head": d}
        sweep = train.make_trainer(variant_config(config, variant, d),
                                   trainer_class=LRSweepTrainer)
        if not task_saved:
          results.write_json(run_dir / "task.json", sweep.task.tables())
          task_saved = True
        writer.write(0, sweep.measure_init_seeds(config.init_seeds),
                     {**fields, "phase": "init"})
        runner.train_and_log(
            sweep, RateSplitWriter(writer, sweep.learning_rates, config.num_seeds),
            progress, fields={**fields, "phase": "train"},
            desc=f"{condition_name(variant, d)} ×{len(sweep.learning_rates)} lr")
  finally:
    writer.close()
  finish(run_dir)
  return run_dir


# ---- analysis from saved rows --------------------------------------------------
def layer_mean(rows, prefix: str, n_layers: int, **where) -> tuple[np.ndarray, np.ndarray]:
  """``(steps, values [seeds, steps])`` of ``prefix/L<l>`` averaged over layers."""
  tables = [results.metric_table(rows, f"{prefix}/L{l}", **where) for l in range(n_layers)]
  return tables[0][0], np.mean([t[1] for t in tables], 0)


def qk_grad(rows, n_layers: int, **where) -> tuple[np.ndarray, np.ndarray]:
  """Geometric mean of the W_Q and W_K gradient norms, averaged over layers."""
  per_layer = []
  for l in range(n_layers):
    steps, g_q = results.metric_table(rows, f"grad_norm/L{l}/query", **where)
    _, g_k = results.metric_table(rows, f"grad_norm/L{l}/key", **where)
    per_layer.append(np.sqrt(g_q * g_k))
  return steps, np.mean(per_layer, 0)


def init_value(rows, what: str, variant: str, d: int, n_layers: int) -> np.ndarray:
  """Per init seed: ``what`` at initialization (layer-averaged)."""
  where = dict(phase="init", condition=condition_name(variant, d))
  if what == "grad_qk":
    return qk_grad(rows, n_layers, **where)[1][:, 0]
  if what in ("loss", "accuracy"):
    return results.metric_table(rows, what, **where)[1][:, 0]
  if what.startswith("grad_norm/"):  # grad_norm/<matrix>, averaged over layers
    name = what.split("/")[1]
    return np.mean([results.metric_table(rows, f"grad_norm/L{l}/{name}", **where)[1][:, 0]
                    for l in range(n_layers)], 0)
  return layer_mean(rows, what, n_layers, **where)[1][:, 0]


def train_table(rows, what: str, variant: str, d: int, rate: float,
                n_layers: int) -> tuple[np.ndarray, np.ndarray]:
  """``(steps, values [seeds, steps])`` of one training run's metric."""
  where = dict(phase="train", condition=condition_name(variant, d), learning_rate=rate)
  if what == "grad_qk":
    return qk_grad(rows, n_layers, **where)
  if what in ("loss", "accuracy", "diverged", "diverged_step"):
    return results.metric_table(rows, what, **where)
  return layer_mean(rows, what, n_layers, **where)


def over_rates(rows, what: str, variant: str, d: int, rates, n_layers: int,
               reduce: str = "final") -> np.ndarray:
  """[seeds, rates]: per training run, the final value (``reduce="final"``),
  the value at step 0 (``"first"``) or the peak over logged steps
  (``"peak"``). NaN for a run that diverged (its metrics stop there)."""
  cols = []
  for rate in rates:
    _, v = train_table(rows, what, variant, d, rate, n_layers)
    if reduce == "final":
      cols.append(v[:, -1])
    elif reduce == "first":
      cols.append(v[:, 0])
    else:  # a diverged run has NaN from its divergence on, so its peak is NaN
      cols.append(np.max(v, 1))
  return np.stack(cols, 1)


def log_growth(rows, variant, d, rates, n_layers) -> np.ndarray:
  """[seeds, rates]: log10(final max logit / max logit at step 0); NaN if
  either is not positive or the run diverged."""
  first = over_rates(rows, "max_logit", variant, d, rates, n_layers, "first")
  last = over_rates(rows, "max_logit", variant, d, rates, n_layers)
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where((first > 0) & (last > 0), np.log10(last / first), np.nan)


def diverged_fraction(rows, variant, d, rates, n_layers) -> np.ndarray:
  """Per seed: the fraction of learning rates at which the run diverged."""
  return np.mean(over_rates(rows, "diverged", variant, d, rates, n_layers), 1)


def _nanmean(x, axis):
  return plotting.nan_mean_std(x, axis)[0]


def evaluate_claims(rows, config) -> list[dict[str, Any]]:
  heads, names, rates = d_heads(config), variants(config), learning_rates(config)
  n_layers, d_max = config.model.n_layers, max(heads)
  have = set(names)
  out = []
  quote_scale = ("To stabilize the gradients during training, the dot product of Q and K "
                 "is scaled by the square root of the dimension of the key vectors")

  for variant, exponent, name in (
      ("unscaled", 0.5, "without scaling, logit std grows like sqrt(d_k)"),
      ("scaled", 0.0, "with 1/sqrt(d_k), logit std does not grow with d_k")):
    if variant not in have:
      continue
    table = np.stack([init_value(rows, "logit_std", variant, d, n_layers) for d in heads], 1)
    slope = signal.loglog_slope(heads, table)
    margin = 0.1
    out.append(stats.claim(
        name=name + " (at initialization)",
        quote=("Attention(Q, K, V) = softmax(QKᵀ / √dₖ) · V" if variant == "scaled"
               else "unscaled logit std should grow like sqrt(d_k)"),
        source=ARTICLE_002 if variant == "scaled" else ISSUE,
        measured=(f"{variant}: per seed, least-squares slope of log(logit std) on log(d_k) "
                  f"over d_k in {heads} (logit std pooled over visible pairs, mean over "
                  f"layers); supported if the 95% CI lies within {exponent} ± {margin}"),
        values=slope, verdict=stats.verdict_equivalent(slope - exponent, margin)))

  if {"scaled", "unscaled"} <= have:
    ent = (init_value(rows, "norm_entropy", "scaled", d_max, n_layers)
           - init_value(rows, "norm_entropy", "unscaled", d_max, n_layers))
    out.append(stats.claim(
        name="scaling keeps softmax from saturating (at initialization)",
        quote=quote_scale, source=ARTICLE_001,
        measured=(f"d_k={d_max}: normalized attention entropy (1 uniform, 0 one-hot), "
                  "scaled minus unscaled, same seeds"),
        values=ent, verdict=stats.verdict_greater(ent)))

    g = np.log10(init_value(rows, "grad_qk", "unscaled", d_max, n_layers)
                 / init_value(rows, "grad_qk", "scaled", d_max, n_layers))
    out.append(stats.claim(
        name="scaling keeps W_Q, W_K gradients from exploding (at initialization)",
        quote="Scaling: Prevent gradient explosion.", source=ARTICLE_000,
        measured=(f"d_k={d_max}: log10 of the W_Q/W_K gradient norm (geometric mean, mean "
                  "over layers) unscaled / scaled; > 0: larger without scaling"),
        values=g, verdict=stats.verdict_greater(g)))

    div = (diverged_fraction(rows, "unscaled", d_max, rates, n_layers)
           - diverged_fraction(rows, "scaled", d_max, rates, n_layers))
    out.append(stats.claim(
        name="scaling prevents divergence in training",
        quote=quote_scale, source=ARTICLE_001,
        measured=(f"d_k={d_max}: per seed, fraction of learning rates {rates} whose run "
                  "hit a non-finite value, unscaled minus scaled"),
        values=div, verdict=stats.verdict_greater(div)))

    peak = np.log10(_nanmean(over_rates(rows, "grad_qk", "unscaled", d_max, rates, n_layers,
                                        "peak"), 1)
                    / _nanmean(over_rates(rows, "grad_qk", "scaled", d_max, rates, n_layers,
                                          "peak"), 1))
    out.append(stats.claim(
        name="scaling keeps W_Q, W_K gradients from exploding (in training)",
        quote="Scaling: Prevent gradient explosion.", source=ARTICLE_000,
        measured=(f"d_k={d_max}: log10 of the peak logged W_Q/W_K gradient norm "
                  "(mean over non-diverged learning rates), unscaled / scaled"),
        values=peak, verdict=stats.verdict_greater(peak)))

    ent_end = (_nanmean(over_rates(rows, "norm_entropy", "scaled", d_max, rates, n_layers), 1)
               - _nanmean(over_rates(rows, "norm_entropy", "unscaled", d_max, rates,
                                     n_layers), 1))
    out.append(stats.claim(
        name="scaling keeps softmax from saturating (after training)",
        quote=quote_scale, source=ARTICLE_001,
        measured=(f"d_k={d_max}: final normalized attention entropy, mean over "
                  "non-diverged learning rates, scaled minus unscaled"),
        values=ent_end, verdict=stats.verdict_greater(ent_end)))

    loss = (_nanmean(over_rates(rows, "loss", "unscaled", d_max, rates, n_layers), 1)
            - _nanmean(over_rates(rows, "loss", "scaled", d_max, rates, n_layers), 1))
    out.append(stats.claim(
        name="scaling gives a lower final loss across learning rates",
        quote=quote_scale, source=ARTICLE_001,
        measured=(f"d_k={d_max}: final loss, mean over non-diverged learning rates "
                  f"{rates}, unscaled minus scaled"),
        values=loss, verdict=stats.verdict_greater(loss)))

  if {"scaled", "qk_norm"} <= have:
    growth = (_nanmean(log_growth(rows, "scaled", d_max, rates, n_layers), 1)
              - _nanmean(log_growth(rows, "qk_norm", d_max, rates, n_layers), 1))
    out.append(stats.claim(
        name="QK-norm bounds the growth of the largest logit more than 1/sqrt(d_k) alone",
        quote="(comparison variant, not an explainer claim)", source=QKNORM_SOURCE,
        measured=(f"d_k={d_max}: log10(final max logit / max logit at step 0), mean over "
                  "non-diverged learning rates, scaled minus QK-norm"),
        values=growth, verdict=stats.verdict_greater(growth)))
  return out


def summarize(rows, config) -> dict[str, Any]:
  heads, names, rates = d_heads(config), variants(config), learning_rates(config)
  n_layers = config.model.n_layers
  init, final, diverged_runs = {}, {}, []
  for d in heads:
    for v in names:
      cond = condition_name(v, d)
      init[cond] = {}
      for what in ("logit_std", "max_logit", "norm_entropy", "grad_qk", "grad_norm/value",
                   "loss"):
        x = init_value(rows, what, v, d, n_layers)
        init[cond][what] = {**stats.describe(x), "per_seed": x}
      for rate in rates:
        entry = {}
        for what in ("loss", "accuracy", "norm_entropy", "max_logit", "logit_std",
                     "grad_qk"):
          x = train_table(rows, what, v, d, rate, n_layers)[1][:, -1]
          entry[what] = {**stats.describe(x), "per_seed": x}
        div = train_table(rows, "diverged", v, d, rate, n_layers)[1][:, -1]
        div_step = train_table(rows, "diverged_step", v, d, rate, n_layers)[1][:, -1]
        entry["diverged_fraction"] = float(np.mean(div > 0))
        final[f"{cond}/lr{rate:g}"] = entry
        diverged_runs += [{"variant": v, "d_head": d, "learning_rate": rate,
                           "seed": int(i), "step": int(div_step[i])}
                          for i in np.flatnonzero(div > 0)]
  steps = sorted({r["step"] for r in rows if r.get("phase") == "train"})
  return {
      "num_seeds": int(config.num_seeds),
      "init_seeds": int(config.init_seeds),
      "final_step": steps[-1] if steps else 0,
      "diverged_runs": diverged_runs,
      "claims": evaluate_claims(rows, config),
      "init": init,
      "final": final,
  }


# ---- figures -------------------------------------------------------------------
def _note(fig, text):
  fig.text(0.99, -0.01, text, ha="right", va="top", fontsize=7, color="0.4")


def init_figure(rows, config):
  heads, names, n_layers = d_heads(config), variants(config), config.model.n_layers
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(9.6, 2.8))
  x = np.array(heads, float)
  for v in names:
    for ax, what in zip(axes, ("logit_std", "norm_entropy", "grad_qk")):
      vals = np.stack([init_value(rows, what, v, d, n_layers) for d in heads], 1)
      plotting.band(ax, x, vals, VARIANT_COLORS[v], VARIANT_LABELS[v],
                    log=what != "norm_entropy")
  if "unscaled" in names:
    ref = np.nanmean(init_value(rows, "logit_std", "unscaled", heads[0], n_layers))
    axes[0].plot(x, ref * np.sqrt(x / x[0]), color="0.5", ls=":", lw=1, label="∝ √d_k")
  axes[0].set_ylabel("std of attention logits")
  axes[1].set_ylabel("attention entropy / log(#keys)")
  axes[1].set_ylim(0, 1.05)
  axes[2].set_ylabel("‖∇W_Q‖, ‖∇W_K‖ (geometric mean)")
  for ax in axes:
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(d) for d in heads])
    ax.set_xlabel("d_k (d_head)")
  axes[0].legend(frameon=False)
  fig.suptitle("At initialization: logits, softmax saturation and Q/K gradients vs d_k",
               y=1.02)
  fig.tight_layout()
  _note(fig, f"mean ± 1 std over {config.init_seeds} seeds; layer mean")
  return fig


def init_grad_figure(rows, config):
  heads, names, n_layers = d_heads(config), variants(config), config.model.n_layers
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.6), squeeze=False,
                           sharey=True)
  x = np.array(heads, float)
  for ax, v in zip(axes[0], names):
    for name in ("query", "key", "value", "out"):
      vals = np.stack([init_value(rows, f"grad_norm/{name}", v, d, n_layers)
                       for d in heads], 1)
      plotting.band(ax, x, vals, plotting.MATRIX_COLORS[name],
                    plotting.MATRIX_LABELS[name], log=True)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(d) for d in heads])
    ax.set_xlabel("d_k (d_head)")
    ax.set_title(VARIANT_LABELS[v])
  axes[0][0].set_ylabel("gradient norm at init (layer mean)")
  axes[0][-1].legend(frameon=False)
  fig.suptitle("Per-matrix gradient norms at initialization", y=1.02)
  _note(fig, f"mean ± 1 std over {config.init_seeds} seeds")
  return fig


def lr_figure(rows, config):
  heads, names, rates = d_heads(config), variants(config), learning_rates(config)
  n_layers = config.model.n_layers
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = (("loss", "final loss"), ("diverged", "fraction of seeds diverged"),
            ("norm_entropy", "final attention entropy / log(#keys)"),
            ("max_logit", "final max logit"))
  fig, axes = plt.subplots(len(panels), len(heads), figsize=(3.0 * len(heads), 2.2 * len(panels)),
                           squeeze=False, sharex=True)
  x = np.array(rates)
  for col, d in enumerate(heads):
    for row, (what, label) in enumerate(panels):
      ax = axes[row][col]
      for v in names:
        if what == "diverged":
          frac = np.mean(over_rates(rows, "diverged", v, d, rates, n_layers) > 0, 0)
          ax.plot(x, frac, "o-", color=VARIANT_COLORS[v], label=VARIANT_LABELS[v])
          ax.set_ylim(-0.05, 1.05)
        else:
          vals = over_rates(rows, what, v, d, rates, n_layers)
          plotting.band(ax, x, vals, VARIANT_COLORS[v], VARIANT_LABELS[v],
                        log=what == "max_logit")
          ax.plot(x, plotting.nan_mean_std(vals)[0], "o", color=VARIANT_COLORS[v], ms=3)
      ax.set_xscale("log")
      if row == 0:
        ax.set_title(f"d_k = {d}")
        ax.axhline(np.log(config.task.n_details), color="0.5", ls=":", lw=1)
      if col == 0:
        ax.set_ylabel(label)
      if row == len(panels) - 1:
        ax.set_xlabel("learning rate")
  axes[0][-1].legend(frameon=False, fontsize=7)
  fig.suptitle(f"Learning-rate sensitivity after {config.steps} steps "
               "(dotted: chance loss log n_details)", y=1.0)
  fig.tight_layout()
  _note(fig, f"mean ± 1 std over {config.num_seeds} seeds per rate; "
               "diverged runs excluded from the bands")
  return fig


def curves_figure(rows, config):
  heads, names, rates = d_heads(config), variants(config), learning_rates(config)
  n_layers, d = config.model.n_layers, max(heads)
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = (("max_logit", "max logit"), ("norm_entropy", "entropy / log(#keys)"),
            ("grad_qk", "‖∇W_Q‖,‖∇W_K‖"), ("loss", "loss"))
  fig, axes = plt.subplots(len(panels), len(rates), figsize=(3.0 * len(rates), 2.0 * len(panels)),
                           squeeze=False, sharex=True)
  for col, rate in enumerate(rates):
    for row, (what, label) in enumerate(panels):
      ax = axes[row][col]
      for v in names:
        steps, vals = train_table(rows, what, v, d, rate, n_layers)
        plotting.band(ax, steps, vals, VARIANT_COLORS[v], VARIANT_LABELS[v],
                      log=what in ("grad_qk", "max_logit", "loss"))
      if row == 0:
        ax.set_title(f"lr = {rate:g}")
      if col == 0:
        ax.set_ylabel(label)
      if row == len(panels) - 1:
        ax.set_xlabel("step")
  axes[0][-1].legend(frameon=False, fontsize=7)
  fig.suptitle(f"Training at d_k = {d}: logit growth and entropy collapse", y=1.0)
  fig.tight_layout()
  _note(fig, f"mean ± 1 std over {config.num_seeds} seeds; diverged seeds stop")
  return fig


def write_report(run_dir, saved, summary, figures, config) -> None:
  m = config.model
  heads, names, rates = d_heads(config), variants(config), learning_rates(config)
  lines = [
      "# qkvjax: does dividing by √d_k keep softmax from saturating?",
      "",
      f"Run `{run_dir.name}`: d_k in {heads}, variants {names}; at initialization "
      f"{config.init_seeds} seeds, then {config.num_seeds} seeds × learning rates {rates} "
      f"× {config.steps} steps ({config.optim.optimizer}, no clipping) per variant; "
      f"{m.n_layers} layers × {m.n_heads} head, d_model {m.d_model}, "
      f"{'causal' if m.causal else 'bidirectional'}, {'with' if m.mlp else 'no'} MLP; "
      f"backend {saved['backend']} ({saved['device_kind']}), jax {saved['versions']['jax']}, "
      f"commit {saved['git_commit']}.",
      "",
      "Logit std is pooled over the visible (query, key) pairs; attention entropy is "
      "divided by log(number of visible keys), so 1 is uniform and 0 a saturated, "
      "one-hot softmax; per-layer values are averaged over layers. Effects are across "
      "seeds: mean ± std, 95% bootstrap CI of the mean (expanded percentile); a claim is "
      "*supported* when the CI lies on the claimed side (or, for an exponent, within "
      "the stated margin), *not supported* when it lies on the other (or outside), "
      "*inconclusive* otherwise.",
      "",
  ]
  if summary["diverged_runs"]:
    lines += ["**Diverged runs** (non-finite loss or parameters; their metrics stop at "
              "divergence and are excluded from means, but counted in the divergence "
              "fraction): " + ", ".join(
                  f"{r['variant']} d_k={r['d_head']} lr={r['learning_rate']:g} seed "
                  f"{r['seed']} at step {r['step']}" for r in summary["diverged_runs"]), ""]
  else:
    lines += ["No run diverged.", ""]
  lines += ["## Claims", ""] + report.claims_table(summary["claims"]) + [""]
  lines += ["## Quotes tested", ""]
  lines += report.quote_lines(summary["claims"])
  lines += ["", "## Figures", ""]
  lines += report.figure_lines(figures)
  lines += ["## At initialization", "",
            "| d_k | variant | logit std | attention entropy / log(#keys) | "
            "√(‖∇W_Q‖‖∇W_K‖) | seeds |",
            "|---|---|---|---|---|---|"]
  for d in heads:
    for v in names:
      e = summary["init"][condition_name(v, d)]
      lines.append(f"| {d} | {v} | {report.effect_cell(e['logit_std'])} | "
                   f"{report.effect_cell(e['norm_entropy'])} | "
                   f"{report.effect_cell(e['grad_qk'])} | {e['logit_std']['n']} |")
  lines += ["", "## After training", "",
            "| d_k | variant | lr | final loss | final entropy / log(#keys) | "
            "final max logit | diverged |",
            "|---|---|---|---|---|---|---|"]
  for d in heads:
    for v in names:
      for rate in rates:
        e = summary["final"][f"{condition_name(v, d)}/lr{rate:g}"]
        lines.append(f"| {d} | {v} | {rate:g} | {report.effect_cell(e['loss'])} | "
                     f"{report.effect_cell(e['norm_entropy'])} | "
                     f"{report.effect_cell(e['max_logit'])} | "
                     f"{e['diverged_fraction']:.2f} |")
  lines += report.redraw_lines(run_dir)
  results.write_atomic(run_dir / "report.md", "\n".join(lines))


def finish(run_dir: pathlib.Path) -> None:
  """Summary, figures and report from the saved files alone."""
  run_dir = pathlib.Path(run_dir)
  saved, config, rows = results.load_run(run_dir)
  summary = summarize(rows, config)
  results.write_json(run_dir / "summary.json", summary)
  figures = {
      "Logit std, attention entropy and Q/K gradients vs d_k at initialization":
          plotting.save(init_figure(rows, config), run_dir, "init_vs_dhead"),
      "Per-matrix gradient norms at initialization":
          plotting.save(init_grad_figure(rows, config), run_dir, "init_grad_norms"),
      "Learning-rate sensitivity per variant":
          plotting.save(lr_figure(rows, config), run_dir, "lr_sensitivity"),
      "Training curves at the largest d_k":
          plotting.save(curves_figure(rows, config), run_dir, "training_curves"),
  }
  write_report(run_dir, saved, summary, figures, config)

"""``--exp=scaling``: does dividing by sqrt(d_k) keep softmax from saturating
and gradients from exploding? Conditions ``<variant>/d<d_head>/lr<rate>``;
scaled and unscaled differ only in the foldable ``model.attn_scale``, rates in
``optim.learning_rate``: one vmapped program per (d_head, QK-norm), measured at
initialization over ``init_seeds`` seeds too (rows ``phase="init"``). All draw
the same seed keys, so comparisons are paired per seed."""

from __future__ import annotations

import itertools

import numpy as np

from qkvjax import config as config_lib
from qkvjax import effects
from qkvjax import figure_kinds
from qkvjax import metrics
from qkvjax import plotting
from qkvjax import report
from qkvjax import stats
from qkvjax import study
from qkvjax import train
from qkvjax.figure_kinds import BandRow, Ref, XRow
from qkvjax.study import Claim, Figure

# What each variant sets in the ``model`` block.
VARIANTS = {"scaled": {"model.attn_scale": "inv_sqrt_dk", "model.qk_norm": False},
            "unscaled": {"model.attn_scale": "none", "model.qk_norm": False},
            "qk_norm": {"model.attn_scale": "inv_sqrt_dk", "model.qk_norm": True}}
COLORS = {"scaled": "#1f77b4", "unscaled": "#d62728", "qk_norm": "#2ca02c"}
LABELS = {"scaled": "scaled 1/√d_k", "unscaled": "unscaled", "qk_norm": "QK-norm + 1/√d_k"}
QUOTE_SCALE = ("To stabilize the gradients during training, the dot product of Q and K is "
               "scaled by the square root of the dimension of the key vectors")
QUOTE_EXPLODE = "Scaling: Prevent gradient explosion."


def name(variant: str, d_head: int, rate: float) -> str:
  return f"{variant}/d{d_head}/lr{rate}"


def conditions(c) -> dict[str, dict]:
  return {name(v, d, r): {"model.d_head": d, **VARIANTS[v], "optim.learning_rate": r}
          for d in c.d_heads for v in c.variants for r in c.learning_rates}


def validate(c) -> None:
  config_lib.validate_common(c)
  config_lib.require(2 <= c.init_seeds <= config_lib.MAX_SEEDS, "init_seeds", c.init_seeds,
                     f"2..{config_lib.MAX_SEEDS}")
  config_lib.require_values(c, "d_heads", lambda v: len(c.d_heads) >= 2 and 1 <= v <= 4096,
                            "two or more distinct integers in 1..4096")
  config_lib.require_values(c, "variants", lambda v: v in VARIANTS,
                            "distinct names from " + ", ".join(VARIANTS))
  config_lib.require_values(c, "learning_rates", lambda v: v > 0, "distinct numbers > 0")


def series(run, what: str, **where) -> tuple[np.ndarray, np.ndarray]:
  """``(steps, [seeds, steps])`` of ``what``: ``loss``, ``accuracy``,
  ``diverged`` as logged, else its layer mean (``effects.layer_mean``)."""
  if what in ("loss", "accuracy", "diverged"):
    return run.table(what, **where)
  return effects.layer_mean(run, what, **where)


def at_init(run, what: str, variant: str, d: int) -> np.ndarray:
  """[init seeds]: ``what`` at initialization (the same for every rate: read the first)."""
  cond = name(variant, d, run.config.learning_rates[0])
  return series(run, what, phase="init", condition=cond)[1][:, 0]


def by_dhead(run, what: str, variant: str) -> np.ndarray:
  """[init seeds, d_heads]: ``what`` at initialization against d_k."""
  return np.stack([at_init(run, what, variant, d) for d in run.config.d_heads], 1)


def trained(run, what: str, variant: str, d: int, rate: float):
  return series(run, what, condition=name(variant, d, rate))


def over_rates(run, what: str, variant: str, d: int, reduce: str = "final") -> np.ndarray:
  """[seeds, rates]: per run, the final value, the value at step 0 (``"first"``)
  or the peak over logged steps (``"peak"``); NaN for a diverged run."""
  return np.stack([effects.reduce_steps(trained(run, what, variant, d, r)[1], reduce)
                   for r in run.config.learning_rates], 1)


def log_growth(run, variant: str, d: int) -> np.ndarray:
  """[seeds]: log10(final max logit / max logit at step 0), mean over non-diverged rates."""
  return effects.finite_mean(effects.log_growth(
      *(over_rates(run, "max_logit", variant, d, r) for r in ("first", "final"))))


def claims(run) -> list[Claim]:
  heads, have = list(run.config.d_heads), set(run.config.variants)
  d, rates = max(heads), list(run.config.learning_rates)
  out = [Claim(
      f"{text} (at initialization)", quote, source, f"{variant}: per seed, least-squares "
      f"slope of log(logit std) on log(d_k) over d_k in {heads} (logit std pooled over "
      f"visible pairs, mean over layers); equivalent to {exponent:g} within ± 0.1 (a fifth "
      "of the sqrt(d_k) exponent)", lambda r, v=variant: stats.loglog_slope(heads, by_dhead(r, "logit_std", v)),
      stats.Equivalent(0.1, center=exponent)) for variant, exponent, text, quote, source in (
          ("unscaled", 0.5, "without scaling, logit std grows like sqrt(d_k)",
           "unscaled logit std should grow like sqrt(d_k)", "qkvjax"),
          ("scaled", 0.0, "with 1/sqrt(d_k), logit std does not grow with d_k",
           "Attention(Q, K, V) = softmax(QKᵀ / √dₖ) · V", "qkv_mechanism"))
      if variant in have]
  # Scaled vs unscaled at d_k = max: (claim, quote, source, measured, per-variant
  # value, sign (+1: unscaled minus scaled), smallest effect of interest). Smallest
  # effects: 0.05 of normalized entropy (5% of its 0..1 range), 0.1 in a log10
  # ratio (a factor 1.26), one rate of the grid, 0.05 nats of loss.
  vs_unscaled = (
      ("scaling keeps softmax from saturating (at initialization)", QUOTE_SCALE,
       "qkv_in_transformers", "normalized attention entropy (1 uniform, 0 one-hot), scaled "
       "minus unscaled, same seeds", lambda r, v: at_init(r, "norm_entropy", v, d), -1, 0.05),
      ("scaling keeps W_Q, W_K gradients from exploding (at initialization)", QUOTE_EXPLODE,
       "division_of_labor", "log10 of the W_Q/W_K gradient norm (geometric mean, mean over "
       "layers) unscaled / scaled; > 0: larger without scaling",
       lambda r, v: np.log10(at_init(r, "grad_qk", v, d)), 1, 0.1),
      ("scaling prevents divergence in training", QUOTE_SCALE, "qkv_in_transformers",
       f"per seed, fraction of learning rates {rates} whose run hit a non-finite value, "
       "unscaled minus scaled", lambda r, v: np.mean(over_rates(r, "diverged", v, d), 1),
       1, 1 / len(rates)),
      ("scaling keeps W_Q, W_K gradients from exploding (in training)", QUOTE_EXPLODE,
       "division_of_labor", "log10 of the peak logged W_Q/W_K gradient norm (mean over "
       "non-diverged learning rates), unscaled / scaled",
       lambda r, v: np.log10(effects.finite_mean(over_rates(r, "grad_qk", v, d, "peak"))), 1, 0.1),
      ("scaling keeps softmax from saturating (after training)", QUOTE_SCALE,
       "qkv_in_transformers", "final normalized attention entropy, mean over non-diverged "
       "learning rates, scaled minus unscaled",
       lambda r, v: effects.finite_mean(over_rates(r, "norm_entropy", v, d)), -1, 0.05),
      ("scaling gives a lower final loss across learning rates", QUOTE_SCALE,
       "qkv_in_transformers", f"final loss, mean over non-diverged learning rates {rates}, "
       "unscaled minus scaled", lambda r, v: effects.finite_mean(over_rates(r, "loss", v, d)), 1, 0.05))
  if {"scaled", "unscaled"} <= have:
    out += [Claim(text, quote, source, f"d_k={d}: {measured}",
                  lambda r, f=value, s=sign: s * (f(r, "unscaled") - f(r, "scaled")),
                  stats.Greater(0.0, smallest))
            for text, quote, source, measured, value, sign, smallest in vs_unscaled]
  if {"scaled", "qk_norm"} <= have:
    out.append(Claim(
        "QK-norm bounds the growth of the largest logit more than 1/sqrt(d_k) alone",
        "(comparison variant, not an explainer claim)", "dehghani2023",
        f"d_k={d}: log10(final max logit / max logit at step 0), mean over non-diverged "
        "learning rates, scaled minus QK-norm; smallest effect 0.1 (a factor 1.26)",
        lambda r: log_growth(r, "scaled", d) - log_growth(r, "qk_norm", d),
        stats.Greater(0.0, 0.1)))
  return out


# ---- figures -------------------------------------------------------------------
def variant_bands(run) -> list[tuple]:
  return [(v, COLORS[v], LABELS[v]) for v in run.config.variants]


def init_spec(run) -> dict:
  """Logit std, saturation and Q/K gradients against d_k, at initialization."""
  heads = list(run.config.d_heads)
  guide = None
  if "unscaled" in run.config.variants:
    ref = np.nanmean(at_init(run, "logit_std", "unscaled", heads[0]))
    guide = (heads, ref * np.sqrt(np.array(heads) / heads[0]), "∝ √d_k")
  row = lambda what, ylabel, log, **kw: XRow(ylabel, lambda _, v: by_dhead(run, what, v), log,
                                             **kw)
  return dict(rows=[row("logit_std", "std of attention logits", True, guide=guide),
                    row("norm_entropy", "entropy / log(#keys)", False),
                    row("grad_qk", "√(‖∇W_Q‖‖∇W_K‖)", True)],
              cols={"": None}, x=heads, xlabel="d_k (d_head)", bands=variant_bands(run),
              title="At initialization: logits, softmax saturation and Q/K gradients vs d_k",
              note="layer mean; at initialization")


def init_grad_spec(run) -> dict:
  return dict(rows=[XRow("gradient norm at init (layer mean)",
                         lambda v, m: by_dhead(run, f"grad_norm/{m}", v), True)],
              cols={LABELS[v]: v for v in run.config.variants}, x=list(run.config.d_heads),
              xlabel="d_k (d_head)", title="Per-matrix gradient norms at initialization",
              note="at initialization", bands=[
                  (m, plotting.MATRIX_COLORS[m], plotting.MATRIX_LABELS[m])
                  for m in ("query", "key", "value", "out")])


def lr_spec(run) -> dict:
  row = lambda what, ylabel, log, **kw: XRow(ylabel, lambda d, v: over_rates(run, what, v, d),
                                             log, **kw)
  return dict(rows=[row("loss", "final loss", False,
                        refs=[Ref(np.log(run.config.task.n_details))]),
                    row("diverged", "fraction of seeds diverged", False, ylim=(-0.05, 1.05)),
                    row("norm_entropy", "final attention entropy / log(#keys)", False),
                    row("max_logit", "final max logit", True)],
              cols={f"d_k = {d}": d for d in run.config.d_heads},
              x=list(run.config.learning_rates), xlabel="learning rate", bands=variant_bands(run),
              title=f"Learning-rate sensitivity after {run.config.steps} steps (dotted: chance "
              "loss log n_details)", note="per learning rate; diverged runs excluded from the "
              "bands")


def training_rows(run) -> list[BandRow]:
  """Layer means over training at the largest d_k (a column per rate)."""
  return [BandRow(label, lambda c, w=what: series(run, w, condition=c)[1],
                  linear=what == "norm_entropy")  # the entropy, in 0..1
          for label, what in (("max logit", "max_logit"),
                              ("entropy / log(#keys)", "norm_entropy"),
                              ("√(‖∇W_Q‖‖∇W_K‖)", "grad_qk"), ("loss", "loss"))]


def figures(run) -> list[Figure]:
  d = max(run.config.d_heads)
  return [
      figure_kinds.against("Logit std, attention entropy and Q/K gradients vs d_k at "
                           "initialization", "init_vs_dhead", init_spec),
      figure_kinds.against("Per-matrix gradient norms at initialization", "init_grad_norms",
                           init_grad_spec),
      figure_kinds.against("Learning-rate sensitivity per variant", "lr_sensitivity", lr_spec),
      figure_kinds.bands(
          "Training curves at the largest d_k", "training_curves", training_rows,
          lambda r: {f"lr = {x:g}": {v: name(v, d, x) for v in r.config.variants}
                     for x in r.config.learning_rates}, COLORS, LABELS, width=3.1, log=True,
          suptitle=lambda r: f"Training at d_k = {d}: logit growth and entropy collapse "
          "(diverged seeds stop)"),
  ]


def sections(run, summ) -> list[str]:
  """Layer means at initialization (per variant and d_k) and after training (per condition)."""
  del summ  # per-layer values at init are in summary["at_init"], final ones in ["final"]
  c = run.config
  cell = lambda x: report.effect_cell(stats.describe(x))
  init = [[d, v] + [cell(at_init(run, w, v, d)) for w in ("logit_std", "norm_entropy",
                                                           "grad_qk")] + [c.init_seeds]
          for d, v in itertools.product(c.d_heads, c.variants)]
  end = [[d, v, f"{r:g}"] + [cell(trained(run, w, v, d, r)[1][:, -1])
                             for w in ("loss", "norm_entropy", "max_logit")]
         + [f"{np.mean(trained(run, 'diverged', v, d, r)[1][:, -1] > 0):.2f}"]
         for d, v, r in itertools.product(c.d_heads, c.variants, c.learning_rates)]
  return (["## At initialization", ""] + report.table(
      ["d_k", "variant", "logit std", "attention entropy / log(#keys)", "√(‖∇W_Q‖‖∇W_K‖)",
       "seeds"], init) + ["", "## After training (layer means)", ""] + report.table(
      ["d_k", "variant", "lr", "final loss", "final entropy / log(#keys)", "final max logit",
       "diverged"], end) + [""])


def describe(run) -> str:
  c, m = run.config, run.config.model
  return (
      f"The selection task; {m.n_layers} layers × {m.n_heads} head, d_model {m.d_model}, "
      f"{'with' if m.mlp else 'no'} MLP; {c.init_seeds} seeds at initialization, then "
      f"{c.num_seeds} seeds per learning rate × {c.steps} steps ({c.optim.optimizer}, no "
      "clipping). Logit std pools the visible (query, key) pairs; attention entropy is "
      "divided by log(#visible keys): 1 uniform, 0 one-hot (saturated); per-layer values "
      "are layer means. A diverged run is excluded from means, counted as diverged.")


STUDY = study.Study(
    name="scaling", title="qkvjax: does dividing by √d_k keep softmax from saturating?",
    task="selection", conditions=conditions,
    metrics=(metrics.attention_signal, metrics.weight_norms), claims=claims,
    figures=figures, describe=describe, validate=validate,
    compile_options=train.FAST_COMPILE, sections=sections, init_seeds="init_seeds")

"""``--exp=scaling``: does dividing by sqrt(d_k) keep softmax from saturating
and gradients from exploding? Conditions ``<variant>/d<d_head>/lr<rate>``;
scaled and unscaled differ only in the foldable ``model.attn_scale``, rates in
``optim.learning_rate``: one vmapped program per (d_head, QK-norm), measured at
initialization over ``init_seeds`` seeds too (rows ``phase="init"``). All draw
the same seed keys, so comparisons are paired per seed."""

from __future__ import annotations

import numpy as np

from qkvjax import claim_kinds
from qkvjax import config as config_lib
from qkvjax import effects
from qkvjax import figure_kinds
from qkvjax import metrics
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
# (quote, source) of the claims that scaling helps.
SCALE = ("To stabilize the gradients during training, the dot product of Q and K is scaled by "
         "the square root of the dimension of the key vectors", "qkv_in_transformers")
EXPLODE = ("Scaling: Prevent gradient explosion.", "division_of_labor")
# Conditions ``<variant>/d<d_head>/lr<rate>``; metrics as logged or their layer means.
GRID = effects.Grid("{}/d{}/lr{}")
name = GRID.name


def conditions(c) -> dict[str, dict]:
  return {name(v, d, r): {"model.d_head": d, **VARIANTS[v], "optim.learning_rate": r}
          for d in c.d_heads for v in c.variants for r in c.learning_rates}


def validate(c) -> None:
  config_lib.validate_common(c)
  config_lib.require_values(c, "d_heads", lambda v: len(c.d_heads) >= 2 and 1 <= v <= 4096,
                            "two or more distinct integers in 1..4096")
  config_lib.require_names(c, "variants", VARIANTS)
  config_lib.require_values(c, "learning_rates", lambda v: v > 0, "distinct numbers > 0")


def at_init(run, what: str, v: str, d) -> np.ndarray:
  """[init seeds]: ``what`` at initialization in variant ``v`` at d_head ``d``
  (the same for every rate: read the first); [init seeds, d_heads] for a list ``d``."""
  return GRID.read(run, what, v, d, run.config.learning_rates[0], reduce="first", phase="init")


def claims(run) -> list[Claim]:
  heads, have = list(run.config.d_heads), set(run.config.variants)
  d, rates = max(heads), list(run.config.learning_rates)
  # Per variant at d_k = max: at init, or per rate reduced over steps, mean over the finite.
  init = lambda what, f=np.asarray: lambda r, v: f(at_init(r, what, v, d))
  end = lambda what, how="final", f=np.asarray: lambda r, v: f(effects.finite_mean(
      GRID.read(r, what, v, d, rates, reduce=how)))
  out = [Claim(
      f"{text} (at initialization)", quote, source, f"{variant}: per seed, least-squares "
      f"slope of log(logit std) on log(d_k) over d_k in {heads} (logit std pooled over "
      f"visible pairs, mean over layers); equivalent to {exponent:g} within ± 0.1 (a fifth "
      "of the sqrt(d_k) exponent)",
      lambda r, v=variant: stats.loglog_slope(heads, at_init(r, "logit_std", v, heads)),
      stats.Equivalent(0.1, center=exponent)) for variant, exponent, text, quote, source in (
          ("unscaled", 0.5, "without scaling, logit std grows like sqrt(d_k)",
           "unscaled logit std should grow like sqrt(d_k)", "qkvjax"),
          ("scaled", 0.0, "with 1/sqrt(d_k), logit std does not grow with d_k",
           "Attention(Q, K, V) = softmax(QKᵀ / √dₖ) · V", "qkv_mechanism"))
      if variant in have]
  # Unscaled vs scaled at d_k = max (np.negative: scaled minus unscaled). Smallest effects:
  # 0.05 of normalized entropy (5% of its 0..1 range), 0.1 in a log10 ratio (a factor 1.26),
  # one rate of the grid, 0.05 nats of loss.
  if {"scaled", "unscaled"} <= have:
    out += claim_kinds.contrasts("unscaled", "scaled", [
        ("scaling keeps softmax from saturating (at initialization)", *SCALE, "normalized "
         "attention entropy (1 uniform, 0 one-hot), scaled minus unscaled, same seeds",
         init("norm_entropy", np.negative), 0.05),
        ("scaling keeps W_Q, W_K gradients from exploding (at initialization)", *EXPLODE,
         "log10 of the W_Q/W_K gradient norm (geometric mean, mean over layers) unscaled / "
         "scaled; > 0: larger without scaling", init("grad_qk", np.log10), 0.1),
        ("scaling prevents divergence in training", *SCALE, f"per seed, fraction of learning "
         f"rates {rates} whose run hit a non-finite value, unscaled minus scaled",
         lambda r, v: np.mean(GRID.read(r, "diverged", v, d, rates), 1), 1 / len(rates)),
        ("scaling keeps W_Q, W_K gradients from exploding (in training)", *EXPLODE, "log10 of "
         "the peak logged W_Q/W_K gradient norm (mean over non-diverged learning rates), "
         "unscaled / scaled", end("grad_qk", "peak", np.log10), 0.1),
        ("scaling keeps softmax from saturating (after training)", *SCALE, "final normalized "
         "attention entropy, mean over non-diverged learning rates, scaled minus unscaled",
         end("norm_entropy", f=np.negative), 0.05),
        ("scaling gives a lower final loss across learning rates", *SCALE, f"final loss, mean "
         f"over non-diverged learning rates {rates}, unscaled minus scaled", end("loss"),
         0.05)], prefix=f"d_k={d}: ")
  if {"scaled", "qk_norm"} <= have:
    out += claim_kinds.contrasts("scaled", "qk_norm", [(
        "QK-norm bounds the growth of the largest logit more than 1/sqrt(d_k) alone",
        "(comparison variant, not an explainer claim)", "dehghani2023",
        f"d_k={d}: log10(final max logit / max logit at step 0), mean over non-diverged "
        "learning rates, scaled minus QK-norm; smallest effect 0.1 (a factor 1.26)",
        end("max_logit", "growth"), 0.1)])
  return out


# ---- figures and report ----------------------------------------------------------
# Over training at the largest d_k, a column per rate: layer means (the entropy on a linear axis).
TRAINING = [BandRow("max logit", "max_logit"),
            BandRow("entropy / log(#keys)", "norm_entropy", linear=True),
            BandRow("√(‖∇W_Q‖‖∇W_K‖)", "grad_qk"), BandRow("loss", "loss")]


def init_spec(run) -> dict:
  """Logit std, saturation and Q/K gradients against d_k, at initialization."""
  return dict(rows=[XRow("std of attention logits", "logit_std", True,
                         guide=("unscaled", 0.5, "∝ √d_k")),
                    XRow("entropy / log(#keys)", "norm_entropy"),
                    XRow("√(‖∇W_Q‖‖∇W_K‖)", "grad_qk", True)],
              read=lambda what, _, v: at_init(run, what, v, run.config.d_heads),
              cols={"": None}, x=list(run.config.d_heads), xlabel="d_k (d_head)",
              bands=figure_kinds.styled(run.config.variants, COLORS, LABELS),
              title="At initialization: logits, softmax saturation and Q/K gradients vs d_k",
              note="layer mean; at initialization")


def lr_spec(run) -> dict:
  """Final values against the learning rate, a column per d_k."""
  return dict(rows=[XRow("final loss", "loss", refs=[Ref(np.log(run.config.task.n_details))]),
                    XRow("fraction of seeds diverged", "diverged", ylim=(-0.05, 1.05)),
                    XRow("final attention entropy / log(#keys)", "norm_entropy"),
                    XRow("final max logit", "max_logit", True)],
              read=lambda what, d, v: GRID.read(run, what, v, d, run.config.learning_rates),
              cols={f"d_k = {d}": d for d in run.config.d_heads},
              x=list(run.config.learning_rates), xlabel="learning rate",
              bands=figure_kinds.styled(run.config.variants, COLORS, LABELS),
              title=f"Learning-rate sensitivity after {run.config.steps} steps (dotted: chance "
              "loss log n_details)", note="per learning rate; diverged runs excluded from the "
              "bands")


def figures(run) -> list[Figure]:
  d = max(run.config.d_heads)
  return [
      figure_kinds.against("Logit std, attention entropy and Q/K gradients vs d_k at "
                           "initialization", "init_vs_dhead", init_spec),
      figure_kinds.against(
          "Per-matrix gradient norms at initialization", "init_grad_norms", lambda r: dict(
              rows=[XRow("gradient norm at init (layer mean)", lambda v, m: at_init(
                  r, f"grad_norm/{m}", v, r.config.d_heads), True)],
              cols={LABELS[v]: v for v in r.config.variants}, x=list(r.config.d_heads),
              xlabel="d_k (d_head)", title="Per-matrix gradient norms at initialization",
              note="at initialization", bands=figure_kinds.styled())),
      figure_kinds.against("Learning-rate sensitivity per variant", "lr_sensitivity", lr_spec),
      figure_kinds.bands(
          "Training curves at the largest d_k", "training_curves", TRAINING,
          lambda r: {f"lr = {x:g}": {v: name(v, d, x) for v in r.config.variants}
                     for x in r.config.learning_rates}, COLORS, LABELS, width=3.1, log=True,
          suptitle=lambda r: f"Training at d_k = {d}: logit growth and entropy collapse "
          "(diverged seeds stop)"),
  ]


def sections(run, summ) -> list[str]:
  """Layer means at initialization (per variant and d_k) and after training (per condition)."""
  del summ  # per-layer values at init are in summary["at_init"], final ones in ["final"]
  c = run.config
  init = [[d, v] + [report.seeds_cell(at_init(run, w, v, d)) for w in (
      "logit_std", "norm_entropy", "grad_qk")] + [c.init_seeds]
          for d in c.d_heads for v in c.variants]
  end = [[d, v, f"{r:g}"] + [report.seeds_cell(GRID.read(run, w, v, d, r))
                             for w in ("loss", "norm_entropy", "max_logit")]
         + [f"{np.mean(GRID.read(run, 'diverged', v, d, r) > 0):.2f}"]
         for d in c.d_heads for v in c.variants for r in c.learning_rates]
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
    task="selection", conditions=conditions, compile_options=train.FAST_COMPILE,
    metrics=(metrics.attention_signal, metrics.weight_norms), claims=claims, figures=figures,
    describe=describe, validate=validate, sections=sections, init_seeds="init_seeds")

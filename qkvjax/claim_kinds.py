"""Claims that several studies make, built once: a study names what is
particular to it (the sites, the conditions, its wording of what is
measured) and gets the same claim name, quote, source and rule everywhere.
"""

from __future__ import annotations

from typing import Callable, Sequence

from qkvjax import effects
from qkvjax import stats
from qkvjax.study import Claim

QUOTE_DIFFERENTIATE = ("the model naturally develops functional differentiation during the "
                       "optimization")
QUOTE_V_EMBED = "A token's V (Value) is most related to the token's initial embedding"
QUOTE_K_INDEX = ("K is like an index that needs to summarize all the main features of a "
                 "token, but Q focuses on querying a specific feature")
QUOTE_GRADIENTS = ("Gradients for W_V: Come from the final weighted sum ... Gradients for "
                   "W_Q: Mainly come from the similarity calculation")
QUOTE_INDEPENDENT = "Q/K/V come from three completely independent matrix multiplications"
MIGHT_FAIL = "the other verdicts mean little if the model fails"
DIFFERENTIATE_MEASURED = (
    "relative L1 distance between the singular-value spectra of the most different pair of "
    "W_Q, W_K, W_V (mean over layers), end minus step 0; smallest effect of interest 0.03, "
    "the distance three independent random draws already have")
GRADIENT_MEASURED = ("log10 of grad-norm(W_V) / geometric mean of grad-norms(W_Q, W_K) at "
                     "step 0, mean over layers")


def prerequisite(what: str, measured: str, effect: Callable, smallest: float = 0.05,
                 why: str = MIGHT_FAIL) -> Claim:
  """Not a claim of the articles: the check the other verdicts rest on (the
  task is learned), > 0 with ``smallest`` as the smallest effect of interest."""
  return Claim(f"prerequisite: {what}", f"(not a claim; {why})", "qkvjax", measured, effect,
               stats.Greater(0.0, smallest))


def final_above(key: str, bar: float, **where) -> Callable:
  """An effect: per seed, the final value of ``key`` minus ``bar``."""
  return lambda run: run.final(key, **where) - bar


def paired(fn: Callable, a, b) -> Callable:
  """An effect: per seed, ``fn(run, a) - fn(run, b)`` (conditions share seed keys)."""
  return lambda run: fn(run, a) - fn(run, b)


def differentiation(sites: Sequence[str], name: str = "W_Q, W_K, W_V differentiate during "
                    "training", measured: str = DIFFERENTIATE_MEASURED, **where) -> Claim:
  """The spectral distance between W_Q, W_K, W_V grows in training (``effects.spectral_distance``)."""
  return Claim(name, QUOTE_DIFFERENTIATE, "division_of_labor", measured,
               lambda r: (effects.spectral_distance(r, sites, -1, **where)
                          - effects.spectral_distance(r, sites, 0, **where)),
               stats.Greater(0.0, 0.03))


def v_closest(site: str, measured: str, effect: Callable | None = None, **where) -> Claim:
  """V stays closer to the token embedding than Q and K at ``site`` (layer
  ``L<l>``); the effect defaults to ``effects.cka_margin``."""
  return Claim(f"V stays closest to the token's embedding (layer {site[1:]})", QUOTE_V_EMBED,
               "division_of_labor", measured,
               effect or (lambda r: effects.cka_margin(r, site, **where)),
               stats.Greater(0.0, 0.02))


def v_gradient(name: str, measured: str, sites: Sequence[str], **where) -> Claim:
  """At step 0, V's gradient is larger than Q's and K's (``effects.grad_ratio``)."""
  return Claim(name, QUOTE_GRADIENTS, "division_of_labor", measured,
               lambda r: effects.grad_ratio(r, sites, **where), stats.Greater(0.0, 0.1))


def k_index(measured: str, effect: Callable) -> Claim:
  """K spans more directions than Q: effective rank of W_K minus W_Q, by at least one."""
  return Claim("K is a broad index, Q a focused query", QUOTE_K_INDEX, "division_of_labor",
               measured, effect, stats.Greater(0.0, 1.0))


def costs(variant: str, task: str, baseline: str, quote: tuple[str, str], run, cond: str,
          base: str, threshold: float, speed_margin: float, acc_margin: float,
          key: str = "eval_accuracy", what: str = "eval accuracy") -> list[Claim]:
  """Two claims that ``variant`` (condition ``cond``) costs against
  ``baseline`` (condition ``base``) on ``task``, paired by seed: it reaches
  ``threshold`` of ``key`` more slowly (log2 of the ratio of steps,
  ``effects.slowdown``; smallest effect ``speed_margin``) and ends lower
  (smallest effect ``acc_margin``). ``quote``: (quote, source)."""
  return [Claim(
      f"{variant} learns the {task} task more slowly", *quote,
      f"{task}: log2(steps to {threshold:.0%} {what} with {variant} / with {baseline}), "
      f"paired by seed; never reached counts as {effects.censor(run)} steps; smallest effect "
      f"of interest: config.speed_margin, a slow-down of ×{2 ** speed_margin:.2f}",
      lambda r: effects.slowdown(r, key, threshold, cond, base),
      stats.Greater(0.0, speed_margin)),
          Claim(
      f"{variant} ends less accurate on the {task} task", *quote,
      f"{task}: {what} after {run.config.steps} steps with {baseline} minus with {variant}, "
      "paired by seed; smallest effect of interest: config.acc_margin, the accuracy a cost "
      "must exceed to matter", paired(lambda r, c: r.final(key, condition=c), base, cond),
      stats.Greater(0.0, acc_margin))]


def contrasts(a, b, rows, prefix: str = "") -> list[Claim]:
  """A claim per row ``(name, quote, source, measured, fn, smallest)``: per
  seed, ``fn(run, a) - fn(run, b)`` (``paired``) is > 0, ``smallest`` the
  smallest effect of interest; ``prefix`` opens every measured text."""
  return [Claim(name, quote, source, prefix + measured, paired(fn, a, b),
                stats.Greater(0.0, smallest))
          for name, quote, source, measured, fn, smallest in rows]

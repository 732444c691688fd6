"""Across-seed statistics, claim rules and verdicts.

A claim's effect is one value per seed. Its 95% CI is an expanded-percentile
bootstrap CI of the mean (``bootstrap_ci``). A rule turns the CI into a raw
verdict: *supported* when the CI lies on the claimed side, *not supported*
when it lies on the other, *inconclusive* when it straddles; *negligible*
when the CI does not reach past the threshold by the claim's smallest effect
of interest, yet does not lie on the other side either (an effect, if any,
too small to matter, whether or not it is significant). Each rule also
gives a p-value (a t-test of the same decision), so verdicts can be corrected
for multiple comparisons across all the claims of a run (``holm``): a
corrected verdict keeps the raw one only when its p-value survives
Holm–Bonferroni at 5%, and is *inconclusive* otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import scipy.stats

SUPPORTED, NOT_SUPPORTED = "supported", "not supported"
INCONCLUSIVE, NEGLIGIBLE = "inconclusive", "negligible"
VERDICTS = (SUPPORTED, NEGLIGIBLE, NOT_SUPPORTED, INCONCLUSIVE)
ALPHA = 0.05


def finite(values) -> np.ndarray:
  x = np.asarray(values, dtype=np.float64).ravel()
  return x[np.isfinite(x)]


def expanded_level(n: int, level: float = 0.95) -> float:
  """The percentile level that makes a bootstrap CI of the mean of ``n``
  values as wide as a t-interval would be (Hesterberg's expanded percentile
  interval): plain percentile intervals are too narrow for few seeds
  (about 88% coverage at n = 8 for a nominal 95%)."""
  t = scipy.stats.t.ppf((1 + level) / 2, n - 1)
  return float(1 - 2 * scipy.stats.norm.cdf(-np.sqrt(n / (n - 1)) * t))


def bootstrap_ci(values, level: float = 0.95, n_resamples: int = 10_000,
                 seed: int = 0) -> tuple[float, float] | None:
  """Expanded-percentile bootstrap CI of the mean across seeds (NaNs dropped).

  Deterministic for a given input. ``None`` with fewer than two values.
  """
  x = finite(values)
  if x.size < 2:
    return None
  rng = np.random.default_rng(seed)
  means = x[rng.integers(0, x.size, (n_resamples, x.size))].mean(1)
  adjusted = expanded_level(x.size, level)
  lo, hi = np.quantile(means, [(1 - adjusted) / 2, (1 + adjusted) / 2])
  return float(lo), float(hi)


def describe(values) -> dict[str, Any]:
  """mean, std (ddof=1), 95% bootstrap CI and count of the finite values."""
  x = finite(values)
  n = int(x.size)
  return {
      "mean": float(x.mean()) if n else None,
      "std": float(x.std(ddof=1)) if n > 1 else None,
      "ci95": bootstrap_ci(x),
      "n": n,
  }


def t_pvalue(values, threshold: float, alternative: str = "two-sided") -> float:
  """One-sample t-test p-value of mean vs ``threshold``; 0 when every value
  is the same and differs from it, 1 when it is it or n < 2."""
  x = finite(values)
  if x.size < 2:
    return 1.0
  if np.all(x == x[0]):
    if x[0] == threshold:
      return 1.0
    side = {"greater": x[0] > threshold, "less": x[0] < threshold}.get(alternative, True)
    return 0.0 if side else 1.0
  return float(scipy.stats.ttest_1samp(x, threshold, alternative=alternative).pvalue)


@dataclasses.dataclass(frozen=True)
class Greater:
  """The claim: the effect's mean is above ``threshold``. ``smallest`` is the
  smallest effect of interest, measured from the threshold."""

  threshold: float = 0.0
  smallest: float = 0.0

  def describe(self) -> str:
    return f"> {self.threshold:g} (smallest effect of interest {self.smallest:g})"

  def verdict(self, ci) -> str:
    if ci is None:
      return INCONCLUSIVE
    if ci[1] < self.threshold:
      return NOT_SUPPORTED
    if ci[1] < self.threshold + self.smallest:
      return NEGLIGIBLE
    return SUPPORTED if ci[0] > self.threshold else INCONCLUSIVE

  def pvalue(self, values) -> float:
    return t_pvalue(values, self.threshold)

  def pvalue_negligible(self, values) -> float:
    """One-sided: the mean is below threshold + smallest (doubled, to match
    the two-sided 95% interval)."""
    return min(1.0, 2 * t_pvalue(values, self.threshold + self.smallest, "less"))


@dataclasses.dataclass(frozen=True)
class Less:
  """The claim: the effect's mean is below ``threshold``."""

  threshold: float = 0.0
  smallest: float = 0.0

  def describe(self) -> str:
    return f"< {self.threshold:g} (smallest effect of interest {self.smallest:g})"

  def verdict(self, ci) -> str:
    flipped = Greater(-self.threshold, self.smallest)
    return flipped.verdict(None if ci is None else (-ci[1], -ci[0]))

  def pvalue(self, values) -> float:
    return t_pvalue(values, self.threshold)

  def pvalue_negligible(self, values) -> float:
    return Greater(-self.threshold, self.smallest).pvalue_negligible(-finite(values))


@dataclasses.dataclass(frozen=True)
class Equivalent:
  """The claim: the effect's mean is ``center`` within ± ``margin`` (an
  equivalence test; the margin is the smallest effect of interest)."""

  margin: float
  center: float = 0.0

  @property
  def smallest(self) -> float:
    return self.margin

  def describe(self) -> str:
    return f"within {self.center:g} ± {self.margin:g}"

  def verdict(self, ci) -> str:
    if ci is None:
      return INCONCLUSIVE
    lo, hi = ci[0] - self.center, ci[1] - self.center
    if -self.margin < lo and hi < self.margin:
      return SUPPORTED
    if lo >= self.margin or hi <= -self.margin:
      return NOT_SUPPORTED
    return INCONCLUSIVE

  def pvalue(self, values) -> float:
    """TOST: twice the larger of the two one-sided p-values (so p < 0.05
    matches a 95% interval inside the margins)."""
    x = finite(values) - self.center
    return min(1.0, 2 * max(t_pvalue(x, -self.margin, "greater"),
                            t_pvalue(x, self.margin, "less")))

  def pvalue_outside(self, values) -> float:
    x = finite(values) - self.center
    return min(1.0, 2 * min(t_pvalue(x, self.margin, "greater"),
                            t_pvalue(x, -self.margin, "less")))


Rule = Greater | Less | Equivalent


def decision_pvalue(rule: Rule, values, verdict: str) -> float:
  """The p-value behind a raw verdict (1 for an inconclusive one)."""
  if verdict == INCONCLUSIVE:
    return 1.0
  if isinstance(rule, Equivalent):
    return rule.pvalue(values) if verdict == SUPPORTED else rule.pvalue_outside(values)
  if verdict == NEGLIGIBLE:
    return rule.pvalue_negligible(values)
  return rule.pvalue(values)


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> list[bool]:
  """Holm–Bonferroni step-down: which hypotheses are rejected at family-wise
  error rate ``alpha``."""
  order = np.argsort(pvalues, kind="stable")
  m = len(pvalues)
  rejected = [False] * m
  for rank, i in enumerate(order):
    if pvalues[i] > alpha / (m - rank):
      break
    rejected[i] = True
  return rejected


def correct(entries: list[dict[str, Any]], alpha: float = ALPHA) -> None:
  """Sets ``corrected_verdict`` on claim entries (``evaluate``'s dicts) by
  Holm–Bonferroni across all of them."""
  keep = holm([e["p_value"] for e in entries], alpha)
  for e, ok in zip(entries, keep):
    e["corrected_verdict"] = e["verdict"] if ok and e["verdict"] != INCONCLUSIVE \
        else INCONCLUSIVE


def evaluate(values, rule: Rule) -> dict[str, Any]:
  """A claim's effect (described), raw verdict and its p-value."""
  effect = describe(values)
  verdict = rule.verdict(effect["ci95"])
  return {"effect": effect, "rule": rule.describe(), "smallest_effect": rule.smallest,
          "verdict": verdict, "p_value": decision_pvalue(rule, values, verdict),
          "per_seed": [None if not np.isfinite(v) else float(v)
                       for v in np.asarray(values, float).ravel()]}


def steps_to_threshold(steps_N, values_SxN, threshold: float, censor: float) -> np.ndarray:
  """Per seed, the first logged step whose value is >= ``threshold``;
  ``censor`` if never reached, NaN if the seed diverged before reaching it."""
  values_SxN = np.asarray(values_SxN, float)
  hit_SxN = values_SxN >= threshold
  first = np.where(hit_SxN.any(1), np.asarray(steps_N)[np.argmax(hit_SxN, 1)], censor)
  return np.where(hit_SxN.any(1) | np.isfinite(values_SxN).all(1), first, np.nan)


def loglog_slope(x_N, y_SxN) -> np.ndarray:
  """Per seed (row), the least-squares slope of log(y) on log(x): the
  exponent p of y ~ x^p. NaN for a row with a non-positive or missing value."""
  lx = np.log(np.asarray(x_N, float))
  y = np.asarray(y_SxN, float)
  with np.errstate(divide="ignore", invalid="ignore"):
    ly = np.log(y)
  lx_c = lx - lx.mean()
  slope = (ly - ly.mean(1, keepdims=True)) @ lx_c / np.sum(lx_c**2)
  return np.where(np.all(np.isfinite(ly), 1), slope, np.nan)

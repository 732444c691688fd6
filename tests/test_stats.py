"""Across-seed statistics: CI coverage, verdict logic, diverged seeds."""

import numpy as np
import pytest

from qkvjax import stats


def test_expanded_level_widens_for_few_seeds_and_tends_to_nominal():
  assert stats.expanded_level(4) > stats.expanded_level(8) > stats.expanded_level(100) > 0.95
  assert stats.expanded_level(10_000) == pytest.approx(0.95, abs=1e-3)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
  rng = np.random.default_rng(0)
  hits = 0
  trials = 400
  for i in range(trials):
    ci = stats.bootstrap_ci(rng.normal(0.0, 1.0, 8), n_resamples=2000, seed=i)
    hits += ci[0] <= 0.0 <= ci[1]
  assert 0.91 <= hits / trials <= 0.99, hits / trials


def test_bootstrap_ci_is_deterministic_and_drops_nans():
  a = stats.bootstrap_ci([1.0, 2.0, 3.0, np.nan])
  assert a == stats.bootstrap_ci([1.0, 2.0, 3.0])
  assert stats.bootstrap_ci([1.0]) is None and stats.bootstrap_ci([np.nan, 2.0]) is None


@pytest.mark.parametrize("values,verdict", [
    ([1.0, 1.1, 0.9, 1.05], stats.SUPPORTED),
    ([-1.0, -1.1, -0.9, -1.05], stats.NOT_SUPPORTED),
    ([1.0, -1.0, 0.5, -0.5], stats.INCONCLUSIVE),
    ([1.0], stats.INCONCLUSIVE),
])
def test_verdict_greater(values, verdict):
  assert stats.verdict_greater(values) == verdict


@pytest.mark.parametrize("values,verdict", [
    ([0.01, 0.02, 0.015, 0.012], stats.SUPPORTED),
    ([0.5, 0.6, 0.55, 0.52], stats.NOT_SUPPORTED),
    ([0.01, 0.2, 0.05, 0.15], stats.INCONCLUSIVE),
])
def test_verdict_equivalent(values, verdict):
  assert stats.verdict_equivalent(values, margin=0.1) == verdict


def test_describe_excludes_non_finite_values():
  d = stats.describe([1.0, 3.0, np.nan])
  assert d["n"] == 2 and d["mean"] == 2.0 and d["std"] == pytest.approx(np.sqrt(2))

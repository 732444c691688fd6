"""Across-seed statistics: CI coverage, verdict logic, diverged seeds."""

import numpy as np
import pytest
import scipy.stats

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
    ([0.010, 0.011, 0.009, 0.0105], stats.NEGLIGIBLE),  # real, below the 0.05 of interest
    ([-0.01, 0.012, 0.0, 0.005], stats.NEGLIGIBLE),  # straddles 0, yet rules out 0.05
    ([-0.2, 0.3, 0.1, -0.1], stats.INCONCLUSIVE),  # straddles 0 and reaches 0.05
    ([1.0], stats.INCONCLUSIVE),
])
def test_greater_rule(values, verdict):
  rule = stats.Greater(0.0, smallest=0.05)
  assert rule.verdict(stats.bootstrap_ci(values)) == verdict


def test_less_rule_mirrors_greater():
  rule = stats.Less(0.0, smallest=0.05)
  assert rule.verdict(stats.bootstrap_ci([-1.0, -1.1, -0.9])) == stats.SUPPORTED
  assert rule.verdict(stats.bootstrap_ci([1.0, 1.1, 0.9])) == stats.NOT_SUPPORTED
  assert rule.verdict(stats.bootstrap_ci([-0.01, -0.011, -0.009])) == stats.NEGLIGIBLE


@pytest.mark.parametrize("values,verdict", [
    ([0.01, 0.02, 0.015, 0.012], stats.SUPPORTED),
    ([0.5, 0.6, 0.55, 0.52], stats.NOT_SUPPORTED),
    ([0.01, 0.2, 0.05, 0.15], stats.INCONCLUSIVE),
])
def test_equivalence_rule(values, verdict):
  assert stats.Equivalent(margin=0.1).verdict(stats.bootstrap_ci(values)) == verdict


def test_pvalues_match_scipy_and_the_decision():
  x = [0.3, 0.5, 0.2, 0.4, 0.6]
  assert stats.t_pvalue(x, 0.0) == pytest.approx(scipy.stats.ttest_1samp(x, 0.0).pvalue)
  assert stats.t_pvalue([2.0, 2.0, 2.0], 0.0) == 0.0  # no spread, clearly away
  assert stats.t_pvalue([0.0, 0.0], 0.0) == 1.0
  inside = stats.Equivalent(0.1).pvalue([0.01, 0.02, 0.015, 0.012])
  outside = stats.Equivalent(0.1).pvalue([0.5, 0.6, 0.55, 0.52])
  assert inside < 0.05 < outside


def test_holm_step_down():
  assert stats.holm([0.01, 0.04, 0.03], alpha=0.05) == [True, False, False]
  assert stats.holm([0.001, 0.02, 0.04], alpha=0.05) == [True, True, True]
  assert stats.holm([0.5, 0.001], alpha=0.05) == [False, True]


def test_corrected_verdicts_keep_only_what_survives_holm():
  strong = stats.evaluate([1.0, 1.1, 0.9, 1.05, 1.02], stats.Greater())
  weak = stats.evaluate([0.2, 0.9, 0.1, 0.8, 0.05], stats.Greater())
  assert strong["verdict"] == weak["verdict"] == stats.SUPPORTED
  entries = [strong, weak] + [stats.evaluate([1.0, 1.1, 0.9], stats.Greater())
                              for _ in range(20)]
  stats.correct(entries)
  assert entries[0]["corrected_verdict"] == stats.SUPPORTED
  assert entries[1]["corrected_verdict"] == stats.INCONCLUSIVE  # p ~ 0.04 of 22 claims


def test_describe_excludes_non_finite_values():
  d = stats.describe([1.0, 3.0, np.nan])
  assert d["n"] == 2 and d["mean"] == 2.0 and d["std"] == pytest.approx(np.sqrt(2))


def test_negligible_pvalue_is_the_test_against_the_smallest_effect():
  rule = stats.Greater(0.0, smallest=0.05)
  values = [-0.01, 0.012, 0.0, 0.005]
  entry = stats.evaluate(values, rule)
  assert entry["verdict"] == stats.NEGLIGIBLE
  expected = 2 * scipy.stats.ttest_1samp(values, 0.05, alternative="less").pvalue
  assert entry["p_value"] == pytest.approx(expected)


def test_steps_to_threshold_censors_and_drops_diverged_seeds():
  steps = np.array([0, 10, 20])
  acc = np.array([[0.1, 0.95, 0.99], [0.1, 0.2, 0.3], [0.1, np.nan, np.nan]])
  np.testing.assert_array_equal(stats.steps_to_threshold(steps, acc, 0.9, 30),
                                [10, 30, np.nan])

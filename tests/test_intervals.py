"""The t intervals the figures draw, against values computed by hand and from tables."""
import math

import pytest

from bench.reporting.intervals import mean_interval, t_quantile, t_two_sided


@pytest.mark.parametrize("df, q", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706),
                                   (9, 2.2622), (10, 2.2281), (30, 2.0423), (120, 1.9799)])
def test_t_quantiles_match_the_tables(df, q):
    assert t_quantile(0.95, df) == pytest.approx(q, abs=1e-4)


def test_closed_forms_for_one_and_two_degrees_of_freedom():
    # ν = 1 is Cauchy: P(|T| ≤ t) = 2 atan(t) / π; ν = 2: t / sqrt(2 + t²)
    for t in (0.3, 1.0, 4.0):
        assert t_two_sided(t, 1) == pytest.approx(2 * math.atan(t) / math.pi, rel=1e-12)
        assert t_two_sided(t, 2) == pytest.approx(t / math.sqrt(2 + t * t), rel=1e-12)
    assert t_quantile(0.5, 1) == pytest.approx(1.0, rel=1e-9)        # the Cauchy quartile


def test_mean_interval_by_hand():
    mean, half = mean_interval([1.0, 2.0, 3.0])          # sd 1, n 3: 4.3027 / sqrt(3)
    assert mean == 2.0 and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert mean_interval([5.0, None]) == (5.0, None)     # one value: no spread to go by
    assert mean_interval([]) == (None, None)
    assert mean_interval([2.0, 2.0])[1] == 0.0


def test_iqm_cuts_a_quarter_from_each_end_as_trim_mean_does():
    from bench.reporting.intervals import iqm
    assert iqm(range(1, 9)) == 4.5                  # 1..8: 3, 4, 5, 6 remain
    assert iqm([1, 2, 3]) == 2                      # n < 4: nothing is cut
    assert iqm([100, 1, 3, 2, 4]) == 3              # 5 values: one cut from each end, order does not matter
    assert iqm([None, None]) is None


def test_the_bootstrap_resamples_within_strata():
    from bench.reporting.intervals import stratified_bootstrap
    # two cells of four runs: each resample keeps four of each, so the mean never moves from 5
    values, strata = [0, 0, 0, 0, 10, 10, 10, 10], ["a"] * 4 + ["b"] * 4
    assert stratified_bootstrap(values, strata) == (5.0, 5.0)
    # one cell of {0, 1}: resampled means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4 -> the 95 % interval (0, 1)
    assert stratified_bootstrap([0, 1], ["a", "a"]) == (0.0, 1.0)
    lo, hi = stratified_bootstrap([1, 2, 3, 4, 5, 6, 7, 8], ["x"] * 8, stat="iqm", resamples=4000, seed=3)
    assert 1 < lo < 4.5 < hi < 8
    assert stratified_bootstrap([1, 2, 3, 9], ["x"] * 4, seed=5) == stratified_bootstrap([1, 2, 3, 9], ["x"] * 4, seed=5)


def test_differences_are_paired_by_key_not_by_position():
    from bench.reporting.intervals import paired_differences, probability_of_improvement
    a = {(0, 0): 5.0, (1, 0): 7.0, (2, 0): None, (0, 1): 1.0}
    b = {(1, 0): 6.0, (0, 0): 5.0, (2, 0): 3.0}
    assert paired_differences(a, b) == {(0, 0): 0.0, (1, 0): 1.0}
    assert probability_of_improvement(paired_differences(a, b).values()) == 0.75   # one tie, one win
    assert probability_of_improvement([]) is None

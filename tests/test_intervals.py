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

"""Which differences the table calls real: stratified intervals, paired differences, bold and marks, on fixed
numbers computed by hand."""
import math

import pytest

from bench.metrics import BY_KEY
from bench.reporting.compare import Comparison, default_reference, difference, estimate
from bench.reporting.intervals import mean_interval, stratified_t, t_quantile

R10, FORGET, SECONDS = BY_KEY["r10"], BY_KEY["forgetting_r10"], BY_KEY["train_seconds"]


def test_the_stratified_t_interval_by_hand():
    # one stratum: the plain t interval of the mean
    assert stratified_t([1.0, 2.0, 3.0], [0, 0, 0]) == pytest.approx(mean_interval([1.0, 2.0, 3.0]))
    # two strata of three, each with s² = 1: var = (1/3 + 1/3) / 2² = 1/6; Welch–Satterthwaite
    # df = (1/6)² / (2 (1/12)² / 2) = 4 -> t = 2.7764
    mean, half = stratified_t([1, 2, 3, 11, 12, 13], ["a"] * 3 + ["b"] * 3)
    assert mean == 7.0 and half == pytest.approx(2.776445 * math.sqrt(1 / 6), rel=1e-5)
    # the spread between strata is not noise: the pooled interval would be far wider
    assert half < mean_interval([1, 2, 3, 11, 12, 13])[1] / 3
    # unequal strata weigh alike: the mean of the strata's means, not of the runs
    assert stratified_t([0, 0, 0, 0, 10, 10], [0, 0, 0, 0, 1, 1])[0] == 5.0
    # a stratum of one run has no spread of its own: the strata are pooled (wider, never narrower)
    assert stratified_t([1, 2, 3, 11], [0, 0, 0, 1]) == pytest.approx(mean_interval([1, 2, 3, 11]))
    assert stratified_t([4.0, None], [0, 0]) == (4.0, None)


def test_unequal_variances_take_welch_satterthwaite_degrees_of_freedom():
    # strata (0, 2) s² = 2 and (10, 10, 10, 10) s² = 0: all the variance from the first, df = its n − 1 = 1
    mean, half = stratified_t([0, 2, 10, 10, 10, 10], [0, 0, 1, 1, 1, 1])
    assert mean == 5.5 and half == pytest.approx(t_quantile(0.95, 1) * math.sqrt(2 / 2 / 4))


def test_differences_are_paired_by_run_key_and_oriented_by_the_metric():
    a = {(0, 0, 0): 50.0, (1, 0, 0): 52.0, (2, 0, 0): 51.0, (3, 0, 0): 99.0}
    b = {(0, 0, 0): 47.0, (1, 0, 0): 48.0, (2, 0, 0): 46.0, (4, 0, 0): 0.0}
    d = difference(a, b, higher=True)
    assert d.n == 3 and d.mean == 4.0                     # only seeds 0, 1, 2 pair: 3, 4, 5
    assert d.half == pytest.approx(t_quantile(0.95, 2) * 1 / math.sqrt(3))
    assert d.separated == 1 and d.p_improve == 1.0
    lower = difference(a, b, higher=False)                # for a lower-is-better metric, a's larger values lose
    assert lower.mean == -4.0 and lower.separated == -1 and lower.p_improve == 0.0
    assert difference({(0, 0, 0): 1.0}, {(0, 0, 0): 0.0}, True).separated == 0     # one pair: no interval


def _runs(values: dict, role=None):
    """Run records with only what a comparison reads: label, role, seed, summary."""
    roles = {"vanilla": "naive", "joint": "upper-reference", "frozen": "lower-reference"}
    return [{"method": name, "seed": seed, "role": (role or {}).get(name, roles.get(name, "baseline")), "config": {},
             "summary": {"r10": v, "forgetting_r10": -v, "train_seconds": v}}
            for name, vs in values.items() for seed, v in enumerate(vs)]


def test_bold_needs_a_paired_interval_excluding_zero_against_every_other_method():
    # a beats b in every seed by 1 (a constant difference); c is as good as a on average but noisy
    runs = _runs({"vanilla": [10, 11, 12], "a": [20, 21, 22], "b": [19, 20, 21], "joint": [90, 90, 90]})
    cmp = Comparison(runs, (R10, FORGET, SECONDS))
    assert cmp.bold(R10) == "a" and cmp.bold(FORGET) == "a"      # forgetting: lower is better (−v)
    assert cmp.bold(SECONDS) is None                              # no direction: never bold
    noisy = Comparison(_runs({"vanilla": [10, 11, 12], "a": [20, 21, 22], "c": [10, 30, 24]}), (R10,))
    assert noisy.estimate("c", "r10").mean > noisy.estimate("a", "r10").mean
    assert noisy.bold(R10) is None                                # best by mean, but not separated from a
    tie = Comparison(_runs({"a": [20, 21, 22], "b": [20.001, 21, 22]}), (R10,))
    assert tie.bold(R10) is None                                  # equal at the printed precision


def test_marks_compare_with_the_naive_row_or_the_one_asked_for():
    runs = _runs({"vanilla": [10, 11, 12], "a": [20, 21, 22], "b": [9, 10, 11], "c": [10, 12, 11],
                  "joint": [90, 91, 92]})
    cmp = Comparison(runs, (R10,))
    assert cmp.reference == "vanilla" == default_reference(runs)
    assert [cmp.mark(n, R10) for n in ("vanilla", "a", "b", "c", "joint")] == ["", "▲", "▼", "", ""]
    other = Comparison(runs, (R10,), reference="a")
    assert other.mark("vanilla", R10) == "▼" and other.mark("a", R10) == ""
    assert default_reference(_runs({"a": [1, 2]})) is None


def test_the_interquartile_mean_starts_at_four_runs():
    runs = _runs({"a": [1.0, 2.0, 3.0, 100.0]})
    cmp = Comparison(runs, (R10,))
    value, lo, hi = cmp.robust("a", "r10")
    assert value == 2.5 and lo <= value <= hi                     # 1 and 100 cut
    assert Comparison(_runs({"a": [1.0, 2.0, 3.0]}), (R10,)).robust("a", "r10") is None


def test_estimates_ignore_missing_values():
    e = estimate({(0, 0, 0): 1.0, (1, 0, 0): None, (2, 0, 0): 3.0})
    assert e.n == 2 and e.mean == 2.0 and e.half == pytest.approx(t_quantile(0.95, 1) * 1.0)


def test_kendall_tau_b_by_hand():
    from bench.reporting.intervals import kendall_tau
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)        # 5 concordant, 1 discordant
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(3 * 2))  # τ-b: scipy gives 0.8165
    assert kendall_tau([1, 1], [1, 2]) is None


def test_rank_stability_compares_each_order_and_world_with_the_files_own():
    def cell_runs(name, values):          # (order, world) -> value, two seeds each
        return [{"method": name, "seed": s, "role": "baseline", "config": {"order": o, "world": w},
                 "summary": {"r10": v + s * 0.01}} for (o, w), v in values.items() for s in (0, 1)]
    runs = (cell_runs("a", {(0, 0): 3, (1, 0): 1, (0, 1): 3}) + cell_runs("b", {(0, 0): 2, (1, 0): 2, (0, 1): 2})
            + cell_runs("c", {(0, 0): 1, (1, 0): 3, (0, 1): 1}))
    mean, lowest, cells = Comparison(runs, (R10,)).rank_stability(R10)
    assert (mean, lowest, cells) == (0.0, -1.0, 2)      # order 1 reverses the ranking, world 1 keeps it
    assert Comparison(_runs({"a": [1, 2], "b": [2, 3]}), (R10,)).rank_stability(R10) is None   # one cell

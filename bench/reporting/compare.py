"""Which differences in a table are real: every row's mean with its interval, paired differences against a
reference row and between the best rows, and the bold and the marks that follow from them. Pure and
torch-free; the tables, the report and the figures read their intervals from here.

A run is identified by its seed, task order and world (``run_key``); two rows' runs are paired by that key —
the same training seed, order of steps and simulated world (or test draw) — so what they share cancels in
their difference. Runs of one task order × world form a stratum: means weigh every stratum alike and
intervals are stratified Student t intervals (``intervals.stratified_t``), not percentile bootstraps, whose
95 % intervals cover far less than 95 % with the few runs a sweep has (measured in docs/protocol.md).

- **interval of a mean**: the 95 % stratified t interval over a row's runs (a row's own uncertainty; two
  rows' intervals overlapping or not says little about their difference).
- **bold**: the best continual-learning row of a column (by its printed mean) when the paired interval of its
  difference with *every* other continual-learning row excludes 0; a tie at the printed precision, or a
  difference the interval does not separate, leaves the column without bold. References (frozen, joint) are
  never bolded, nor a column without a direction (training time).
- **marks** against the reference (``--compare``, by default the naive method): ▲ when the paired interval
  of the row minus the reference lies entirely on the better side of 0, ▼ when entirely on the worse side.
- **probability of improvement** (Agarwal et al., NeurIPS 2021): the share of paired runs where the row does
  better than the reference (ties count half).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import BenchError
from ..method_spec import REFERENCES
from ..metrics import Metric
from .intervals import iqm, kendall_tau, paired_differences, probability_of_improvement, stratified_bootstrap, stratified_t
from .records import RunKey, label, roles_of, row_order, run_key

LEVEL = 0.95
BETTER, WORSE = "▲", "▼"


def stratum(key: RunKey) -> tuple[int, int]:
    return key[1], key[2]


@dataclass(frozen=True)
class Estimate:
    """A row's mean over its runs with the half-width of its interval (None: fewer than two runs)."""

    mean: float | None
    half: float | None
    n: int


@dataclass(frozen=True)
class Difference:
    """A row minus another over their paired runs, oriented so that positive is better; ``separated``: +1 when
    the interval lies above 0, -1 below, 0 when it holds 0 or cannot be taken."""

    mean: float | None
    half: float | None
    n: int
    p_improve: float | None

    @property
    def separated(self) -> int:
        if self.mean is None or self.half is None:
            return 0
        return 1 if self.mean - self.half > 0 else -1 if self.mean + self.half < 0 else 0


def estimate(values: dict[RunKey, float | None], level: float = LEVEL) -> Estimate:
    keys = [k for k, v in values.items() if v is not None]
    mean, half = stratified_t([values[k] for k in keys], [stratum(k) for k in keys], level)
    return Estimate(mean, half, len(keys))


def difference(a: dict[RunKey, float | None], b: dict[RunKey, float | None], higher: bool,
               level: float = LEVEL) -> Difference:
    """``a - b`` over the keys both have a value for, oriented by the metric's direction (``higher``)."""
    sign = 1.0 if higher else -1.0
    diffs = {k: sign * d for k, d in paired_differences(a, b).items()}
    mean, half = stratified_t(list(diffs.values()), [stratum(k) for k in diffs], level)
    return Difference(mean, half, len(diffs), probability_of_improvement(diffs.values()))


class Comparison:
    """The statistics of one stream's runs: per row and summary metric, the values by run key, the estimates,
    the paired differences, the bold and the marks. ``reference``: the row others are compared with (None:
    the naive method's plain row when there is one)."""

    def __init__(self, runs: list[dict], metrics: tuple[Metric, ...], reference: str | None = None,
                 level: float = LEVEL):
        self.rows, self.metrics, self.level = row_order(runs), metrics, level
        self.roles = roles_of(runs)
        self.values: dict[str, dict[str, dict[RunKey, float | None]]] = {name: {} for name in self.rows}
        for r in runs:
            for m in metrics:
                self.values[label(r)].setdefault(m.key, {})[run_key(r)] = r["summary"].get(m.key)
        self.reference = reference if reference is not None else default_reference(runs)
        self.candidates = [n for n in self.rows if self.roles[n] not in REFERENCES]

    def estimate(self, row: str, key: str) -> Estimate:
        return estimate(self.values[row].get(key, {}), self.level)

    def versus(self, row: str, other: str, m: Metric) -> Difference:
        return difference(self.values[row].get(m.key, {}), self.values[other].get(m.key, {}), bool(m.higher),
                          self.level)

    def bold(self, m: Metric) -> str | None:
        """The row bolded in ``m``'s column, or None (see the module's rule)."""
        if m.higher is None:
            return None
        printed = {n: round(e.mean, m.decimals) for n in self.candidates if (e := self.estimate(n, m.key)).mean is not None}
        if len(printed) < 2:
            return None
        ranked = sorted(printed, key=lambda n: printed[n], reverse=bool(m.higher))
        best = ranked[0]
        if printed[ranked[1]] == printed[best]:
            return None
        return best if all(self.versus(best, other, m).separated > 0 for other in ranked[1:]) else None

    def mark(self, row: str, m: Metric) -> str:
        """▲ / ▼ when ``row`` differs from the reference beyond its paired interval; '' otherwise."""
        if m.higher is None or self.reference is None or row == self.reference or self.roles[row] in REFERENCES:
            return ""
        return {1: BETTER, -1: WORSE, 0: ""}[self.versus(row, self.reference, m).separated]

    def robust(self, row: str, key: str, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float] | None:
        """The interquartile mean of a row's runs with its stratified bootstrap interval (from 4 runs; None
        below). The IQM cuts a quarter of the runs from each end, so an outlying run moves it less than the
        mean; its interval is a bootstrap's (no closed form), narrower than it should be with few runs."""
        vals = {k: v for k, v in self.values[row].get(key, {}).items() if v is not None}
        if len(vals) < 4:
            return None
        lo, hi = stratified_bootstrap(list(vals.values()), [stratum(k) for k in vals], "iqm", self.level,
                                      resamples, seed)
        value = iqm(vals.values())
        assert value is not None
        return value, lo, hi

    def rank_stability(self, m: Metric) -> tuple[float, float, int] | None:
        """How far the ranking of the continual-learning rows by ``m`` holds across task orders and worlds:
        Kendall's τ between each order × world cell's ranking (means over its seeds) and the stream file's own
        cell (order 0, world 0), as (mean τ, lowest τ, number of other cells); None with a single cell."""
        if m.higher is None:
            return None
        cells = sorted({stratum(k) for n in self.candidates for k in self.values[n].get(m.key, {})})
        if len(cells) < 2 or (0, 0) not in cells:
            return None

        def means(cell):
            out = []
            for n in self.candidates:
                vals = [v for k, v in self.values[n].get(m.key, {}).items() if stratum(k) == cell and v is not None]
                out.append(sum(vals) / len(vals) if vals else None)
            return out

        base = means((0, 0))
        taus = []
        for cell in cells:
            if cell == (0, 0):
                continue
            other = means(cell)
            both = [i for i in range(len(base)) if base[i] is not None and other[i] is not None]
            tau = kendall_tau([base[i] for i in both], [other[i] for i in both])
            if tau is not None:
                taus.append(tau)
        return (sum(taus) / len(taus), min(taus), len(taus)) if taus else None


def check_reference(reference: str | None, rows, where: str) -> None:
    """``--compare`` names one of the table's rows (``where``: which table, for the message)."""
    if reference is not None and reference not in rows:
        raise BenchError(f"--compare {reference}: no such row in {where}; its rows are {', '.join(sorted(rows))}")


def default_reference(runs: list[dict]) -> str | None:
    """The naive method's plain row (its name is its label), else None."""
    roles = roles_of(runs)
    plain = {label(r) for r in runs if label(r) == r["method"]}
    naive = [n for n in row_order(runs) if roles[n] == "naive" and n in plain]
    return naive[0] if naive else None

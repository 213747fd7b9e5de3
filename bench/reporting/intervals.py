"""Confidence intervals of a mean over runs: Student's t, exact for integer degrees of freedom, plain or
stratified (task order × world cells); and, for comparisons over several sources of variation, the
interquartile mean, a stratified bootstrap, paired differences and the probability of improvement. Pure and
torch-free; the figures and tables draw their intervals from here (through ``compare.py``): the t
interval for means and differences, the bootstrap for the IQM only (docs/protocol.md says why). scipy is not
a dependency, and these few functions are shorter than adapting ``rliable``'s array layout of runs × tasks
to run records keyed by seed, order and world.

``t_quantile`` inverts the t distribution's two-sided probability, which has a closed form for integer
degrees of freedom ν (a finite trigonometric series; Abramowitz & Stegun 26.7.3–4), by bisection: no
table, no scipy.
"""
from __future__ import annotations

import math


def t_two_sided(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with ``df`` (a positive integer) degrees of freedom."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:                                   # odd: (2/π)(θ + sinθ cosθ (1 + 2/3 c² + 2·4/(3·5) c⁴ …))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return (2 / math.pi) * (theta + s * math.cos(theta) * total)
    term, total = 1.0, 1.0                       # even: sinθ (1 + 1/2 c² + 1·3/(2·4) c⁴ …)
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| ≤ t) = ``level``: the half-width multiplier of a two-sided ``level`` interval."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi = 0.0, 1.0
    while t_two_sided(hi, df) < level:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided(mid, df) < level else (lo, mid)
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


def mean_interval(values, level: float = 0.95) -> tuple[float | None, float | None]:
    """``(mean, half-width)`` of the two-sided ``level`` t interval of the mean of ``values`` (None entries
    ignored); the half-width is None with fewer than two values (no spread to go by)."""
    values = list(values)
    return stratified_t(values, [0] * len(values), level)       # one stratum: the plain t interval


# -- across sources of variation: runs differ by seed, task order and simulated world -----------------------
# The functions below take each run's value keyed by what identifies it (e.g. (seed, order, world)); a
# comparison pairs two methods' runs by that key. numpy only (torch-free); the bootstrap is seeded.

def stratified_t(values, strata, level: float = 0.95) -> tuple[float | None, float | None]:
    """``(mean, half-width)`` of the two-sided ``level`` t interval of a stratified mean: the mean of the
    strata's means (each task order × world cell weighs the same), its variance the sum of each stratum's
    s²/n over the number of strata squared, its degrees of freedom Welch–Satterthwaite's (rounded down: the
    interval errs wide). With one stratum it is ``mean_interval``. When a stratum has a single run (no spread
    of its own), the strata are pooled into one, so the spread between cells counts as noise (wider again).
    None entries are ignored; the half-width is None with fewer than two values."""
    groups: dict = {}
    for v, s in zip(values, strata, strict=True):
        if v is not None:
            groups[s] = groups.get(s, []) + [float(v)]
    if not groups:
        return None, None
    if any(len(g) < 2 for g in groups.values()):
        groups = {0: [v for g in groups.values() for v in g]}
        if len(groups[0]) < 2:
            return groups[0][0], None
    h = len(groups)
    means = [sum(g) / len(g) for g in groups.values()]
    parts = [sum((v - m) ** 2 for v in g) / (len(g) - 1) / len(g) / h ** 2 for g, m in zip(groups.values(), means)]
    se2 = sum(parts)
    dof = sum(len(g) - 1 for g in groups.values())
    if se2 > 0:
        dof = min(dof, int(se2 ** 2 / sum(a ** 2 / (len(g) - 1) for a, g in zip(parts, groups.values()))))
    return sum(means) / h, t_quantile(level, max(1, dof)) * math.sqrt(se2)


def iqm(values) -> float | None:
    """Interquartile mean (Agarwal et al., NeurIPS 2021): the mean of the middle half, ``floor(n/4)`` values cut
    from each end (``scipy.stats.trim_mean(x, 0.25)``); None entries ignored, None when nothing is left."""
    vals = sorted(float(v) for v in values if v is not None)
    if not vals:
        return None
    k = len(vals) // 4
    middle = vals[k:len(vals) - k]
    return sum(middle) / len(middle)


def _stat_rows(samples, stat: str):
    """``stat`` of each row of a (resamples × n) array: ``mean`` or ``iqm``."""
    import numpy as np
    if stat == "mean":
        return samples.mean(axis=1)
    if stat == "iqm":
        k = samples.shape[1] // 4
        return np.sort(samples, axis=1)[:, k:samples.shape[1] - k].mean(axis=1)
    raise ValueError(f"stat must be 'mean' or 'iqm', got {stat!r}")


def stratified_bootstrap(values, strata, stat: str = "mean", level: float = 0.95, resamples: int = 2000,
                         seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval of ``stat`` over ``values``, resampling with replacement *within*
    each stratum (e.g. a task order × world cell: every resample keeps each cell's number of runs, so the
    spread between cells is not mistaken for noise); ``seed`` fixes the resamples."""
    import numpy as np
    if len(values) != len(strata) or not len(values):
        raise ValueError("values and strata must be non-empty and of one length")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    groups: dict = {}
    for v, s in zip(values, strata):
        groups.setdefault(s, []).append(float(v))
    rng = np.random.default_rng(seed)
    parts = []
    for key in sorted(groups, key=repr):             # a fixed order: the same resamples for the same input
        g = np.asarray(groups[key])
        parts.append(g[rng.integers(0, len(g), size=(resamples, len(g)))])
    dist = _stat_rows(np.concatenate(parts, axis=1), stat)
    lo, hi = np.quantile(dist, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_differences(a: dict, b: dict) -> dict:
    """``a[k] - b[k]`` for every key both have a value for (the same seed, task order and world)."""
    return {k: a[k] - b[k] for k in a if k in b and a[k] is not None and b[k] is not None}


def probability_of_improvement(differences) -> float | None:
    """The share of paired runs where the first method is better (a tie counts one half): P(X > Y) of
    Agarwal et al. over pairs; None without pairs. ``differences`` oriented so that positive is better."""
    ds = list(differences)
    if not ds:
        return None
    return sum(1.0 if d > 0 else 0.5 if d == 0 else 0.0 for d in ds) / len(ds)


def kendall_tau(a, b) -> float | None:
    """Kendall's τ-b between two rankings given as score lists over the same items (ties allowed): the
    concordant minus discordant pairs over the square root of the untied pairs in each; None when either
    ranks nothing (every item tied)."""
    if len(a) != len(b):
        raise ValueError("both rankings must score the same items")
    conc = disc = ties_a = ties_b = 0
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ties_a) * (conc + disc + ties_b))
    return None if denom == 0 else (conc - disc) / denom

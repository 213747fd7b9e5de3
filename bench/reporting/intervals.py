"""Confidence intervals of a mean over runs: Student's t, exact for integer degrees of freedom. Pure and
torch-free; the figures and tables draw their intervals from here.

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
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return mean, t_quantile(level, len(vals) - 1) * sd / math.sqrt(len(vals))

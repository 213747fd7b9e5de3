"""Pure metric functions over (T+1)×T matrices.

``R[t][j]``: the metric on task ``j`` (0-based column; it is learned in step ``j+1``) evaluated after
step ``t`` (row 0 = before any training). ``None``/NaN marks an undefined entry (e.g. Acc on a task
without class texts); every summary ignores undefined entries and returns ``None`` when nothing is left.
The definitions follow shared/DESIGN.md with steps counted from 1 there and tasks from 0 here.
"""
from __future__ import annotations

import math
from typing import Sequence

Matrix = Sequence[Sequence[float | None]]


def _val(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _shape(R: Matrix) -> int:
    T = len(R[0]) if R else 0
    if len(R) != T + 1 or any(len(row) != T for row in R):
        raise ValueError(f"metric matrix must have T+1 rows of T values, got {len(R)} rows of {[len(r) for r in R]}")
    return T


def final_average(R: Matrix) -> float | None:
    """mean_j R[T][j]: the metric on every task after the last step (also for probe matrices, whose
    columns are evaluation-only pairs rather than steps)."""
    return _mean(_val(v) for v in R[-1])


def _diff(a, b):
    a, b = _val(a), _val(b)
    return None if a is None or b is None else a - b


def bwt(R: Matrix) -> float | None:
    """Backward transfer (Lopez-Paz & Ranzato 2017): mean over tasks j < T of R[T][j] − R[j][j]
    (1-based steps), i.e. the final value minus the value right after the task was learned."""
    T = _shape(R)
    return _mean(_diff(R[T][j], R[j + 1][j]) for j in range(T - 1))


def fwt(R: Matrix) -> float | None:
    """Forward transfer: mean over tasks j > 1 of R[j−1][j] − R[0][j] (value just before learning the task
    minus its zero-shot value)."""
    T = _shape(R)
    return _mean(_diff(R[j][j], R[0][j]) for j in range(1, T))


def forgetting(R: Matrix) -> float | None:
    """Mean over tasks j < T of max_{j≤t<T} R[t][j] − R[T][j] (best value once learned minus final value)."""
    T = _shape(R)
    out = []
    for j in range(T - 1):
        seen = [_val(R[t][j]) for t in range(j + 1, T)]
        seen = [v for v in seen if v is not None]
        last = _val(R[T][j])
        out.append(None if not seen or last is None else max(seen) - last)
    return _mean(out)


def plasticity(R: Matrix) -> float | None:
    """mean_j R[j][j] (1-based): each task's value right after it was learned."""
    T = _shape(R)
    return _mean(_val(R[j + 1][j]) for j in range(T))


def gain(R: Matrix) -> float | None:
    """mean_j R[T][j] − R[0][j]: what training changed, e.g. on pairs that were never trained (emergent)."""
    return _mean(_diff(last, first) for last, first in zip(R[-1], R[0]))


def final_old_tasks(R: Matrix) -> float | None:
    """mean over tasks j < T of R[T][j]: used for the alignment-score deviation, which is 0 by definition
    on the last task."""
    T = _shape(R)
    return _mean(_val(R[T][j]) for j in range(T - 1))


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of the defined values."""
    vals = [v for v in (_val(x) for x in values) if v is not None]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))

"""Pure metric functions over (T+1)×T matrices.

``R[t][j]``: the metric on task ``j`` (0-based column; it is learned in step ``j+1``) evaluated after
step ``t`` (row 0 = before any training). ``None``/NaN marks an undefined entry (e.g. Acc on a task
without class texts); every summary ignores undefined entries and returns ``None`` when nothing is left.
In docs and tables steps are counted from 1; here task ``j`` is column ``j`` (0-based), learned in row ``j+1``.

``SUMMARY`` below declares every summary metric once — key, title, matrix, function, direction, unit,
decimals — and the run records, the tables, the report and the figures all read it from there.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
        seen = [v for v in (_val(R[t][j]) for t in range(j + 1, T)) if v is not None]
        last = _val(R[T][j])
        out.append(None if not seen or last is None else max(seen) - last)
    return _mean(out)


def plasticity(R: Matrix) -> float | None:
    """mean_j R[j][j] (1-based): each task's value right after it was learned."""
    T = _shape(R)
    return _mean(_val(R[j + 1][j]) for j in range(T))


def transfer(R: Matrix) -> float | None:
    """MTIL's Transfer (Zheng et al., ICCV 2023): mean over tasks j > 1 of the mean of R[t][j] over the steps
    t < j (1-based) — each task's value while it is still unseen, after training on the earlier ones (the
    zero-shot row 0 left out): how much of what the encoders bring to an unseen task training preserves."""
    T = _shape(R)
    return _mean(_mean(_val(R[t][j]) for t in range(1, j + 1)) for j in range(1, T))


def average(R: Matrix) -> float | None:
    """MTIL's Avg (Zheng et al., ICCV 2023): the mean of R[t][j] over every step t ≥ 1 and every task j —
    seen, being learned or not yet seen — i.e. the metric averaged over the whole stream's course."""
    T = _shape(R)
    return _mean(_val(R[t][j]) for t in range(1, T + 1) for j in range(T))


def gain(R: Matrix) -> float | None:
    """mean_j R[T][j] − R[0][j]: what training changed, e.g. on pairs that were never trained (emergent)."""
    return _mean(_diff(last, first) for last, first in zip(R[-1], R[0]))


def final_old_average(R: Matrix) -> float | None:
    """mean over tasks j < T of R[T][j]: the final value on the old tasks (for the alignment-score deviation,
    which is 0 by definition on the last task)."""
    T = _shape(R)
    return _mean(_val(R[T][j]) for j in range(T - 1))


def _point_means(curve: dict, key: str) -> list[float | None]:
    return [_mean(_val(v) for v in point) for point in curve[key]]


def stability_gap(curves: Sequence[dict]) -> float | None:
    """The stability gap (De Lange et al., ICLR 2023) on R@10: for each step with old tasks, the lowest mean
    R@10 of the old tasks over the step's within-step evaluations (``--eval-every``) minus that mean before
    the step (its first point, iteration 0); the mean over those steps. At most 0: how far the old tasks dip
    while a new one is learned, recovered or not by the step's end (BWT sees only the end)."""
    gaps = []
    for c in curves:
        means = _point_means(c, "r10")
        if means and means[0] is not None:
            gaps.append(min(v for v in means if v is not None) - means[0])
    return _mean(gaps)


def worst_within_step(curves: Sequence[dict]) -> float | None:
    """The largest mean alignment-score deviation of the old tasks at any within-step evaluation: the
    furthest the old tasks' alignment moved at any point, where ``align_dev`` shows only the end."""
    vals = [v for c in curves for v in _point_means(c, "align_dev") if v is not None]
    return max(vals) if vals else None


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of the defined values."""
    vals = [v for v in (_val(x) for x in values) if v is not None]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


@dataclass(frozen=True)
class Metric:
    """One summary metric of a run. ``matrix`` names the metric matrix it reads (``probe_matrices`` when
    ``probe``; ``None``: the value comes from the run's timings), ``fn`` is the pure function above, ``higher``
    says which way is better (``None``: not a quality, never ranked or bolded, e.g. a time)."""

    key: str
    title: str
    matrix: str | None
    fn: Callable[[Any], float | None] | None       # of a Matrix (or, ``within``, of the curves)
    higher: bool | None
    unit: str            # "%", "ratio" or "s"
    decimals: int
    description: str
    probe: bool = False  # read from the probes' matrices (streams with [[probes]]; absent otherwise)
    measure: str = "train_seconds"   # without a matrix: which of the run's measures (``summarize``) it shows
    # ``fn`` reads the within-step curves (runs with --eval-every; absent otherwise), not a matrix
    within: bool = False


# The paper's six columns first, then ours; the table, summary.csv, the report and the figures follow this order.
SUMMARY: tuple[Metric, ...] = (
    Metric("acc", "Acc", "acc", final_average, True, "%", 2, "zero-shot accuracy after the last step, mean over tasks"),
    Metric("bwt_acc", "BWT_A", "acc", bwt, True, "%", 2, "backward transfer of Acc"),
    Metric("r1", "R@1", "r1", final_average, True, "%", 2, "Recall@1 after the last step (both directions)"),
    Metric("r5", "R@5", "r5", final_average, True, "%", 2, "Recall@5 after the last step (both directions)"),
    Metric("r10", "R@10", "r10", final_average, True, "%", 2, "Recall@10 after the last step (both directions)"),
    Metric("bwt_r10", "BWT_R10", "r10", bwt, True, "%", 2, "backward transfer of R@10"),
    Metric("fwt_r10", "FWT_R10", "r10", fwt, True, "%", 2, "forward transfer of R@10"),
    Metric("forgetting_r10", "Forget_R10", "r10", forgetting, False, "%", 2, "forgetting of R@10"),
    Metric("plasticity_r10", "Plast_R10", "r10", plasticity, True, "%", 2, "R@10 right after each task is learned"),
    Metric("transfer_r10", "Transfer_R10", "r10", transfer, True, "%", 2,
           "MTIL Transfer on R@10: each task's R@10 before it is learned, after the earlier steps"),
    Metric("avg_r10", "Avg_R10", "r10", average, True, "%", 2,
           "MTIL Avg on R@10: R@10 over every step and task (MTIL's Last is R@10)"),
    Metric("align_dev", "AlignDev", "align_dev", final_old_average, False, "ratio", 4,
           "old tasks' alignment-score deviation after the last step, ||A_jT - A_jj||_F / ||A_jj||_F"),
    Metric("stability_gap_r10", "StabGap_R10", None, stability_gap, True, "%", 2,
           "stability gap: old tasks' lowest mean R@10 during a step minus before it, mean over steps "
           "(--eval-every)", within=True),
    Metric("align_dev_worst", "AlignDev_max", None, worst_within_step, False, "ratio", 4,
           "old tasks' largest mean alignment-score deviation at any within-step evaluation (--eval-every)",
           within=True),
    Metric("train_seconds", "Train s", None, None, None, "s", 1, "training time of the run (evaluation excluded)"),
    Metric("state_mib", "State MiB", None, None, None, "MiB", 2, "the method's extra state at its largest: the "
           "tensors it holds beyond the heads at a step's end (bench.budget)", measure="state_mib"),
    Metric("trainable_params", "Params", None, None, None, "count", 0, "trainable parameters of the heads",
           measure="trainable_params"),
    Metric("emergent_r10", "Emergent_R10", "r10", final_average, True, "%", 2,
           "R@10 of the probes (pairs never trained) after the last step", probe=True),
    Metric("emergent_gain_r10", "EmergGain_R10", "r10", gain, True, "%", 2,
           "probes' R@10 after the last step minus before training", probe=True),
    Metric("emergent_acc", "Emergent_Acc", "acc", final_average, True, "%", 2,
           "zero-shot Acc of the probes after the last step", probe=True),
)
BY_KEY: dict[str, Metric] = {m.key: m for m in SUMMARY}


def measures(train_seconds: float, budget: dict | None = None) -> dict[str, float | None]:
    """The run's values the metrics without a matrix show: its training seconds, and from its ``budget``
    (``bench.budget``; None for runs recorded before it) the method's state in MiB and the trainable
    parameters."""
    return {"train_seconds": train_seconds,
            "state_mib": None if budget is None else budget["state_bytes"] / 2 ** 20,
            "trainable_params": None if budget is None else float(budget["trainable_params"])}


def summarize(matrices: dict, train_seconds: float, probes: dict | None = None,
              budget: dict | None = None, within: dict | None = None) -> dict[str, float | None]:
    """A run's summary: every metric of ``SUMMARY`` (the probe metrics only when the stream has probes, the
    within-step ones only when the run has ``within`` curves, ``bench.runner``'s ``within_step``)."""
    out: dict[str, float | None] = {}
    values = measures(train_seconds, budget)
    for m in SUMMARY:
        if (m.probe and not probes) or (m.within and within is None):
            continue
        if m.within and m.fn is not None and within is not None:
            out[m.key] = m.fn(within["steps"])
        elif m.matrix is None or m.fn is None:
            out[m.key] = values[m.measure]
        else:
            out[m.key] = m.fn((probes if m.probe and probes else matrices)[m.matrix])
    return out

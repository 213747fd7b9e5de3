"""What is derived from run records: the tidy ``summary.csv`` and the mean ± std over runs per method.

The metrics and their order come from ``bench.metrics.SUMMARY``. ``summary.csv`` is tidy (method, seed,
metric, value): ``pandas.read_csv`` gives a frame ready for ``groupby``.
"""
from __future__ import annotations

import csv
import io

from .. import metrics as M
from .records import label, row_order, run_key


def metrics_of(runs: list[dict]) -> tuple[M.Metric, ...]:
    """The summary metrics these runs report: every other metric, and a probe or within-step metric when some
    run has a value for it (streams with [[probes]], runs with --eval-every)."""
    return tuple(m for m in M.SUMMARY
                 if not (m.probe or m.within) or any(r["summary"].get(m.key) is not None for r in runs))


def summary_csv(runs: list[dict]) -> str:
    """One line per run and metric; the columns ``order`` and ``world`` after ``seed`` when the runs have
    several task orders or worlds (a run is then identified by all three)."""
    position = {m: i for i, m in enumerate(row_order(runs))}
    varied = any(run_key(r)[1:] != (0, 0) for r in runs)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "seed", *(["order", "world"] if varied else []), "metric", "value"])
    keys = [m.key for m in metrics_of(runs)]
    for r in sorted(runs, key=lambda r: (position[label(r)], run_key(r))):
        key = list(run_key(r)) if varied else [r["seed"]]
        for k in keys:
            v = r["summary"].get(k)
            w.writerow([label(r), *key, k, "" if v is None else repr(round(v, 6))])
    return buf.getvalue()


def aggregate(runs: list[dict]) -> dict[str, dict[str, tuple[float | None, float | None, int]]]:
    """row label -> metric key -> (mean, std, number of seeds with a value)."""
    out: dict[str, dict] = {}
    keys = [m.key for m in metrics_of(runs)]
    for name in row_order(runs):
        rs = [r for r in runs if label(r) == name]
        out[name] = {}
        for k in keys:
            vals = [r["summary"].get(k) for r in rs]
            mean, std = M.mean_std(vals)
            out[name][k] = (mean, std, sum(v is not None for v in vals))
    return out

"""Run files and what is derived from them: summary metrics, ``summary.csv``, aggregation over seeds.

Importing this module must stay cheap (no torch, no avalanche): ``python -m bench.figures`` rebuilds
everything from the run JSON files alone.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

from . import metrics as M
from .errors import BenchError

SUMMARY_KEYS = ("acc", "bwt_acc", "r1", "r5", "r10", "bwt_r10", "fwt_r10", "forgetting_r10", "plasticity_r10",
                "stability_dev", "train_seconds")
EMERGENT_KEYS = ("emergent_r10", "emergent_gain_r10", "emergent_acc")   # streams with [[probes]] only


def summary_keys(runs: list[dict]) -> tuple[str, ...]:
    return SUMMARY_KEYS + tuple(k for k in EMERGENT_KEYS if any(k in r["summary"] for r in runs))


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def summarize(matrices: dict, train_seconds: float, probes: dict | None = None) -> dict:
    """The run's summary metrics (percent, except ``stability_dev``: the mean relative deviation of old
    tasks' alignment scores after the last step, and ``train_seconds``). With probes (pairs evaluated but
    never trained), ``emergent_r10`` / ``emergent_acc``: their final values, and ``emergent_gain_r10``: final
    minus zero-shot."""
    acc, r10, dev = matrices["acc"], matrices["r10"], matrices["align_dev"]
    extra = {}
    if probes:
        extra = {"emergent_r10": M.final_average(probes["r10"]), "emergent_gain_r10": M.gain(probes["r10"]),
                 "emergent_acc": M.final_average(probes["acc"])}
    return {
        "acc": M.final_average(acc), "bwt_acc": M.bwt(acc),
        "r1": M.final_average(matrices["r1"]), "r5": M.final_average(matrices["r5"]), "r10": M.final_average(r10),
        "bwt_r10": M.bwt(r10), "fwt_r10": M.fwt(r10), "forgetting_r10": M.forgetting(r10),
        "plasticity_r10": M.plasticity(r10), "stability_dev": M.final_old_tasks(dev),
        "train_seconds": train_seconds, **extra,
    }


def run_path(stream_dir: Path, method: str, seed: int) -> Path:
    return stream_dir / "runs" / method / f"seed{seed}.json"


def read_run(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchError(f"run file {path}: unreadable ({e.__class__.__name__}: {e})") from None
    for key in ("method", "seed", "config_hash", "matrices", "summary", "tasks"):
        if key not in data:
            raise BenchError(f"run file {path}: missing key {key!r}")
    return data


def load_runs(stream_dir: Path, methods: list[str] | None = None) -> list[dict]:
    runs = []
    for p in sorted((stream_dir / "runs").glob("*/seed*.json")):
        run = read_run(p)
        if methods is None or run["method"] in methods:
            runs.append(run)
    return runs


def method_orders(runs: list[dict]) -> dict[str, int]:
    """Each method's recorded ``order``: 0 lower references, 10 baselines, 20 DNS variants, 30 upper."""
    orders = {}
    for r in runs:
        orders.setdefault(r["method"], r.get("order", 10))
    return orders


def method_order(runs: list[dict]) -> list[str]:
    """Stable table order: by each run's recorded ``order`` (lower references, baselines, DNS variants,
    upper references), then by name."""
    orders = method_orders(runs)
    return sorted(orders, key=lambda m: (orders[m], m))


def summary_rows(runs: list[dict]) -> list[tuple[str, int, str, float | None]]:
    order = {m: i for i, m in enumerate(method_order(runs))}
    rows, keys = [], summary_keys(runs)
    for r in sorted(runs, key=lambda r: (order[r["method"]], r["seed"])):
        for k in keys:
            rows.append((r["method"], r["seed"], k, r["summary"].get(k)))
    return rows


def summary_csv(runs: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "seed", "metric", "value"])
    for method, seed, k, v in summary_rows(runs):
        w.writerow([method, seed, k, "" if v is None else repr(round(v, 6))])
    return buf.getvalue()


def aggregate(runs: list[dict]) -> dict[str, dict[str, tuple[float | None, float | None, int]]]:
    """method -> metric -> (mean, std, number of seeds)."""
    out, keys = {}, summary_keys(runs)
    for m in method_order(runs):
        rs = [r for r in runs if r["method"] == m]
        out[m] = {}
        for k in keys:
            vals = [r["summary"].get(k) for r in rs]
            mean, std = M.mean_std(vals)
            out[m][k] = (mean, std, sum(v is not None for v in vals))
    return out

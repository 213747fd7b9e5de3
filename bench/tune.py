"""``python -m bench.tune``: choose each method's settings on validation pairs, never on test pairs.

For every method with a search space (``search_space`` beside its defaults; ``--grid`` replaces it), each
candidate setting runs over the seeds on the stream's validation split (``bench.scenario.validation_split``:
10% of each source's training pairs held out of training; no test file is opened), is scored by one
criterion (``CRITERIA``; default ``score``: the final average, over all tasks, of the metrics each task
declares — R@10 for recall, Acc for zero-shot accuracy — which rewards stability and plasticity together),
and the best setting is written with its provenance (every candidate's score per seed, the criterion, the
seeds, the training settings, the code version, the date) to the stream's tuned-settings file, which
``bench.run`` then applies. Runs are ordinary run records under ``<out>/<stream>/tuning/``: finished ones
are skipped, so an interrupted tuning resumes.
"""
from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from .errors import BenchError, run_cli
from .provenance import code_version

DEFAULT_SEEDS = "2"
DEFAULT_BUDGET = 6


def _final_of_declared(record: dict) -> float | None:
    """Mean over tasks j of the mean over j's declared metrics of R[T][j] (recall → R@10, acc → Acc)."""
    mats, vals = record["matrices"], []
    for j, task in enumerate(record["tasks"]):
        per = [mats["r10" if m == "recall" else "acc"][-1][j] for m in task["metrics"]]
        per = [v for v in per if v is not None]
        if per:
            vals.append(sum(per) / len(per))
    return sum(vals) / len(vals) if vals else None


def criteria() -> dict:
    """name -> (function of a run record, direction): ``score`` and every summary metric."""
    from .metrics import SUMMARY
    out: dict[str, tuple[Callable[[dict], float | None], str]] = {"score": (_final_of_declared, "higher")}
    for m in SUMMARY:
        if m.higher is not None:
            out[m.key] = (partial(_summary_value, key=m.key), "higher" if m.higher else "lower")
    return out


def _summary_value(record: dict, key: str) -> float | None:
    return record["summary"].get(key)


def candidates(cls, budget: int, grid: Mapping | None = None) -> list[dict]:
    """The settings to try: the cartesian product of the search space (or ``grid``); when it is larger than
    ``budget``, the default point plus a seeded random sample of the others (deterministic)."""
    from .settings import grid_points
    space = grid if grid is not None else cls.search_space
    points = grid_points({k: list(v) for k, v in space.items()})
    if len(points) <= budget:
        return points
    default = [p for p in points if all(cls.defaults.get(k) == v for k, v in p.items())]
    rest = [p for p in points if p not in default]
    return default + random.Random(0).sample(rest, budget - len(default))


def select(rows: list[dict], direction: str, defaults: dict) -> dict:
    """The best-scoring candidate; among equal scores the default setting, else the first listed."""
    scored = [r for r in rows if r["score"] is not None]
    if not scored:
        return next((r for r in rows if all(defaults.get(k) == v for k, v in r["options"].items())), rows[0])
    best = (max if direction == "higher" else min)(r["score"] for r in scored)
    tied = [r for r in scored if r["score"] == best]
    return next((r for r in tied if all(defaults.get(k) == v for k, v in r["options"].items())), tied[0])


def parse_args(argv):
    from .run import build_parser
    p = build_parser("python -m bench.tune", "Choose each method's settings on validation pairs (never test "
                     "pairs) and write them to the stream's tuned-settings file.")
    p.set_defaults(seeds=DEFAULT_SEEDS)
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                   help=f"settings tried per method at most (default {DEFAULT_BUDGET}; the default setting always)")
    p.add_argument("--criterion", default="score", help="what selects: 'score' (default: final average of each "
                   "task's declared metrics) or a summary metric key, e.g. r10, bwt_r10")
    p.add_argument("--write", help="tuned-settings file to write (default: <stream>.tuned[-<encoder>].json where "
                   "bench.run finds it: beside a user's stream file; for a built-in stream in the user settings "
                   "folder, $CMCL_BENCH_SETTINGS or ~/.config/cmcl-bench, under tuned/)")
    return p.parse_args(argv)


# the top-level fields that say how a file's settings were tuned (kept per method when entries are merged)
PROVENANCE = ("criterion", "direction", "seeds", "orders", "worlds", "budget", "train", "loss", "code_version", "date")


def _previous(target: Path, spec, encoder, explicit: bool) -> tuple[Path | None, dict]:
    """The settings this tuning adds to: ``--write``'s file when it exists and was tuned on this stream file,
    else the file ``bench.run`` would apply."""
    from .tuned import load_tuned, read_tuned
    if not explicit:
        _, path, data = load_tuned(spec, encoder)
        return path, data
    data = read_tuned(target) if target.is_file() else {}
    return (target, data) if data.get("stream_sha256") == spec.sha256 else (None, {})


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_cli(lambda: _main(args), "interrupted: finished tuning runs are saved; rerun to continue")


def _main(args) -> int:
    from .run import answered
    if answered(args):
        return 0
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dataclasses import replace

    from . import catalogue, streams
    from .files import check_writable
    from .reporting.records import read_run
    from .request import Request
    from .run import execute, plan
    from .tuned import tuned_path, write_tuned
    crit = criteria()
    if args.criterion not in crit:
        raise BenchError(f"--criterion must be one of {', '.join(crit)}, got {args.criterion!r}")
    if args.budget < 1:
        raise BenchError("--budget must be >= 1")
    if args.untuned:
        raise BenchError("--untuned is not used by bench.tune (tuning always starts from the untuned settings)")
    if args.wait:
        raise BenchError("--wait is not used by bench.tune (it always waits for runs another runner holds)")
    if args.labels:
        raise BenchError("--label is not used by bench.tune (candidates are labelled by their settings)")
    request = Request.from_args(args)
    names = list(request.methods) if request.methods is not None else catalogue.names()
    for m in names:
        catalogue.get(m)
    names = [m for m in names if request.grids.get(m) or catalogue.get(m).search_space]
    if not names:
        raise BenchError("none of these methods has a search space (or a --grid) to tune")
    points = {m: candidates(catalogue.get(m), args.budget, request.grids.get(m)) for m in names}
    # a choice needs every candidate's runs: wait for those another runner holds
    request = replace(request, methods=tuple(names), split="validation", grids={}, candidates=points, wait=True)
    spec = streams.load(request.stream)
    if args.write is not None and not args.write.strip():
        raise BenchError("--write is empty: name the tuned-settings file to write")
    target = Path(args.write) if args.write is not None else tuned_path(spec, request.encoder)
    if target.is_dir():
        raise BenchError(f"--write {target}: is a folder; give the tuned-settings file to write")
    check_writable(target.parent, "--write" if args.write else "tuned settings folder")
    import torch
    torch.set_num_threads(request.execution.threads)
    t0 = time.perf_counter()
    p = plan(request)
    print(f"tuning {p.stream.name} on validation pairs: {len(names)} methods, seeds "
          f"{', '.join(map(str, p.seeds))}; {len(p.todo)} runs to do, {p.skipped} already done", file=sys.stderr)
    failures = execute(p, request).failures
    if failures:
        raise BenchError(f"{len(failures)} tuning runs failed (first: {failures[0][0].row} {failures[0][0].run_text}: "
                         f"{failures[0][1]}); nothing written — fix the cause and rerun (finished runs are kept)")
    fn, direction = crit[args.criterion]
    out_dir = Path(request.out)
    groups: dict[tuple, list] = {}
    for r in p.runs:
        groups.setdefault((r.method, r.row), []).append(r)
    result, compute = {}, 0.0
    for m in names:
        rows = []
        for runs in [g for (meth, _), g in groups.items() if meth == m]:    # candidates equal in value ran once
            recs = [read_run(r.path(out_dir)) for r in runs]
            compute += sum(rec["timings"]["wall_seconds"] for rec in recs)
            scores = [fn(rec) for rec in recs]
            valid = [s for s in scores if s is not None]
            rows.append({"options": {k: runs[0].options[k] for k in points[m][0]}, "label": runs[0].row,
                         "score": sum(valid) / len(valid) if valid else None, "per_seed": scores})
        best = select(rows, direction, catalogue.get(m).defaults)
        result[m] = {"chosen": best["options"], "search_space": {k: [c[k] for c in points[m]] for k in points[m][0]},
                     "candidates": rows}
        print(f"{m}: {best['label']} ({args.criterion} {best['score']:.2f})" if best["score"] is not None
              else f"{m}: no score", file=sys.stderr)
    from dataclasses import asdict
    first = p.runs[0]
    # methods tuned before keep their entries (with the provenance of the tuning that chose them): tuning one
    # new method must not leave the others untuned
    before_path, before = _previous(target, spec, request.encoder, args.write is not None)
    kept = {}
    for m, entry in (before.get("methods") or {}).items():
        if m not in result:
            kept[m] = {**entry, "tuned_by": entry.get("tuned_by") or {
                "file": str(before_path), **{k: before.get(k) for k in PROVENANCE}}}
    write_tuned(target, {
        "stream": spec.name, "stream_sha256": spec.sha256, "encoder": request.encoder if spec.bank_sources else None,
        "criterion": args.criterion, "direction": direction,
        "split": "validation: 10% of each source's training pairs held out of training (bench.scenario)",
        "seeds": p.seeds, "orders": request.orders, "worlds": request.worlds, "budget": args.budget,
        "train": asdict(first.train), "loss": asdict(first.loss),
        "code_version": code_version(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_seconds": round(time.perf_counter() - t0, 1), "run_seconds": round(compute, 1),
        "jobs": p.jobs, "methods": {**kept, **result}})
    print(f"tuned settings written to {target}" + (f" (kept from {before_path}: {', '.join(kept)})" if kept else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

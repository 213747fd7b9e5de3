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

What makes a choice defensible (docs/protocol.md, "Tuning"): tuning runs on seeds of its own (``--seeds N``
is seeds ``TUNING_SEED_BASE`` … ``+N−1``, disjoint from every ``bench.run --seeds N``) in worlds of its own
(``TUNING_WORLD_BASE`` …: other simulated worlds, other validation draws), at least ``MIN_SEEDS`` of them;
a candidate replaces the default only when it beats it by more than one standard error of their paired
difference over those runs (``select``); when every candidate ties with the default, a warning says so; and
an optimum at the edge of a numeric grid extends that grid by one step beyond it, up to ``--extend`` times
(``extension``), which the provenance records.

With ``--executor ray`` the candidates run as Ray Tune trials (``bench.ray_tune``; ``--scheduler asha`` stops
those that fall behind early); everything above stays as it is.
"""
from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from .errors import BenchError, run_cli
from .provenance import code_version

DEFAULT_SEEDS = "3"
DEFAULT_BUDGET = 6
DEFAULT_EXTEND = 2
MIN_SEEDS = 3             # a standard error of the paired difference from fewer is too noisy to gate a choice
# bench.run --seeds N reports seeds 0..N-1 (N <= 1000) in worlds 0..K-1: tuning's own start above both
TUNING_SEED_BASE = 1000
TUNING_WORLD_BASE = 1000
RULE = ("the default is kept unless a candidate beats it by more than one standard error of the paired "
        "difference (same seed, order and world) over the tuning runs; among those that do, the best mean")


def declared_score(row: Mapping[str, list], metrics: list) -> float | None:
    """Mean over tasks j of the mean of ``row[key][j]`` over j's declared metrics (recall → R@10, acc → Acc);
    ``metrics``: per task its declared metrics, for the tasks to count (the first ``len(metrics)``)."""
    vals = []
    for j, declared in enumerate(metrics):
        per = [row["r10" if m == "recall" else "acc"][j] for m in declared]
        per = [v for v in per if v is not None]
        if per:
            vals.append(sum(per) / len(per))
    return sum(vals) / len(vals) if vals else None


def _final_of_declared(record: dict) -> float | None:
    """``score``: the declared score of the final row, over every task."""
    mats = record["matrices"]
    return declared_score({k: m[-1] for k, m in mats.items()}, [t["metrics"] for t in record["tasks"]])


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
    """The settings to try: the cartesian product of the search space (or ``grid``) with the default point
    first (added when a ``grid`` leaves it out: it is what a candidate must beat); when that is more than
    ``budget``, the default plus a seeded random sample of the others (deterministic)."""
    from .settings import grid_points
    space = grid if grid is not None else cls.search_space
    # --grid's values are text: typed here, so that "1" is the default 1.0 and edges are numbers
    points = [{k: cls.resolve(p)[k] for k in p} for p in grid_points({k: list(v) for k, v in space.items()})]
    default = {k: cls.defaults.get(k) for k in space}
    points = [default] + [p for p in points if p != default]
    if len(points) <= budget:
        return points
    return [default] + random.Random(0).sample(points[1:], budget - 1)


def paired_gain(runs: list, base: list, direction: str) -> tuple[float | None, float | None, int]:
    """(mean, standard error, n) of the paired improvement of ``runs`` over ``base`` (per-run scores in the
    same run order; pairs with a missing score are left out); the error is ``None`` below two pairs."""
    sign = 1.0 if direction == "higher" else -1.0
    d = [sign * (a - b) for a, b in zip(runs, base, strict=True) if a is not None and b is not None]
    if not d:
        return None, None, 0
    mean = sum(d) / len(d)
    if len(d) < 2:
        return mean, None, len(d)
    var = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
    return mean, (var / len(d)) ** 0.5, len(d)


def select(rows: list[dict], direction: str) -> tuple[dict, bool]:
    """``(chosen row, every candidate ties)``: ``rows[0]`` is the default; a candidate replaces it only when
    its paired gain over the default exceeds one standard error (``RULE``), and among those that do the
    best mean score wins (the first listed on equal scores). "Ties": no candidate's gain, up or down, is
    beyond one standard error — the criterion cannot tell the settings apart on these runs."""
    default, sign = rows[0], (1.0 if direction == "higher" else -1.0)
    better, ties = [], True
    for r in rows[1:]:
        gain, se, _ = paired_gain(r["per_seed"], default["per_seed"], direction)
        r["vs_default"] = {"gain": gain, "se": se}
        if gain is None or se is None:
            continue
        if abs(gain) > se:
            ties = False
        if gain > se:
            better.append(r)
    if not better:
        return default, ties and len(rows) > 1
    return max(better, key=lambda r: sign * r["score"]), False


def extension(cls, points: list[dict], chosen: dict) -> list[tuple[str, dict]]:
    """``(option, new point)`` for each numeric option whose chosen value is the lowest or highest of the
    values tried: one step beyond that edge — geometric when the edge and its neighbour are both positive
    (the grids are log-spaced), else arithmetic — rounded to 3 significant digits; a step outside the
    option's allowed range is not taken (the optimum is at the range's bound, not the grid's edge)."""
    out = []
    for k, v in chosen.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        values = sorted({p[k] for p in points if isinstance(p[k], (int, float)) and not isinstance(p[k], bool)})
        if len(values) < 2 or v not in (values[0], values[-1]):
            continue
        nb = values[1] if v == values[0] else values[-2]
        new = v * v / nb if v > 0 and nb > 0 else 2 * v - nb
        typ = cls.option_type(k) if cls.option_type(k) in (int, float) else type(v)
        new = typ(float(f"{new:.3g}")) if typ is float else int(round(new))
        point = {**chosen, k: new}
        if new not in values and cls.option_problem(k, new) is None and point not in points:
            out.append((k, point))
    return out


def parse_args(argv):
    from .run import build_parser
    p = build_parser("python -m bench.tune", "Choose each method's settings on validation pairs (never test "
                     "pairs) and write them to the stream's tuned-settings file.",
                     seeds_help=f"N (at least {MIN_SEEDS}: tuning's own seeds {TUNING_SEED_BASE}..{TUNING_SEED_BASE}"
                                f"+N-1, disjoint from those bench.run reports; default {DEFAULT_SEEDS}) or a list i,j",
                     worlds_help=f"worlds per seed, tuning's own: {TUNING_WORLD_BASE}..{TUNING_WORLD_BASE}+K-1 (other "
                                 "simulated worlds; for feature banks other validation draws), never the reported "
                                 "0..K-1 (default 1)")
    p.set_defaults(seeds=DEFAULT_SEEDS)
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                   help=f"settings tried per method at most (default {DEFAULT_BUDGET}; the default setting always)")
    p.add_argument("--criterion", default="score", help="what selects: 'score' (default: final average of each "
                   "task's declared metrics) or a summary metric key, e.g. r10, bwt_r10")
    p.add_argument("--write", help="tuned-settings file to write (default: <stream>.tuned[-<encoder>].json where "
                   "bench.run finds it: beside a user's stream file; for a built-in stream in the user settings "
                   "folder, $CMCL_BENCH_SETTINGS or ~/.config/cmcl-bench, under tuned/)")
    from .ray_tune import SCHEDULERS
    p.add_argument("--scheduler", default="none", choices=SCHEDULERS,
                   help="with --executor ray (Ray Tune): 'asha' stops candidates that fall behind early, judged on "
                        "their finished runs (the default setting is never stopped); 'none' runs every candidate "
                        "to its end, as the local tuner does (default)")
    p.add_argument("--extend", type=int, default=DEFAULT_EXTEND, metavar="R",
                   help="times a numeric grid whose optimum is at its edge is extended one step beyond it "
                        f"(default {DEFAULT_EXTEND}; 0: never)")
    return p.parse_args(argv)


# the top-level fields that say how a file's settings were tuned (kept per method when entries are merged)
PROVENANCE = ("criterion", "direction", "rule", "seeds", "orders", "worlds", "budget", "extend", "train", "loss",
              "code_version", "date")


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


def tuning_seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: a count N is tuning's own seeds from ``TUNING_SEED_BASE``; a list is taken as given."""
    from .request import parse_seeds
    seeds = parse_seeds(text)
    if "," not in text:
        seeds = [TUNING_SEED_BASE + s for s in seeds]
    if len(seeds) < MIN_SEEDS:
        raise BenchError(f"--seeds {text}: tuning needs at least {MIN_SEEDS} seeds (a candidate must beat the "
                         "default by one standard error of their paired difference over seeds)")
    return tuple(seeds)


def _score(p, out_dir: Path, fn, keys: dict[str, list[str]], stopped: Collection[str] = ()
           ) -> tuple[dict[str, dict[str, dict]], float]:
    """method -> row -> candidate record (options, label, mean score, per-run scores in run order), and the
    runs' summed wall seconds; candidates in ``stopped`` (stopped early by a scheduler: not all their runs
    exist) are left out."""
    from .reporting.records import read_run
    groups: dict[tuple, list] = {}
    for r in p.runs:
        groups.setdefault((r.method, r.row), []).append(r)
    out: dict[str, dict[str, dict]] = {}
    compute = 0.0
    for (m, row), runs in groups.items():           # candidates equal in value ran once
        if row in stopped:
            continue
        recs = [read_run(r.path(out_dir)) for r in runs]
        compute += sum(rec["timings"]["wall_seconds"] for rec in recs)
        scores = [fn(rec) for rec in recs]
        valid = [v for v in scores if v is not None]
        out.setdefault(m, {})[row] = {"options": {k: runs[0].options[k] for k in keys[m]}, "label": row,
                                      "score": sum(valid) / len(valid) if valid else None, "per_seed": scores}
    return out, compute


def _main(args) -> int:
    from .run import answered
    if answered(args):
        return 0
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dataclasses import replace

    from . import catalogue, streams
    from .files import check_writable
    from .request import Request
    from .run import execute, plan
    from .tuned import tuned_path, write_tuned
    crit = criteria()
    if args.criterion not in crit:
        raise BenchError(f"--criterion must be one of {', '.join(crit)}, got {args.criterion!r}")
    if args.budget < 1:
        raise BenchError("--budget must be >= 1")
    if args.extend < 0:
        raise BenchError(f"--extend must be >= 0, got {args.extend}")
    if args.untuned:
        raise BenchError("--untuned is not used by bench.tune (tuning always starts from the untuned settings)")
    if args.wait:
        raise BenchError("--wait is not used by bench.tune (it always waits for runs another runner holds)")
    if args.labels:
        raise BenchError("--label is not used by bench.tune (candidates are labelled by their settings)")
    if args.scheduler != "none" and args.executor != "ray":
        raise BenchError(f"--scheduler {args.scheduler} schedules Ray Tune's trials: it goes with --executor ray")
    request = Request.from_args(args)
    names = list(request.methods) if request.methods is not None else catalogue.names()
    for m in names:
        catalogue.get(m)
    names = [m for m in names if request.grids.get(m) or catalogue.get(m).search_space]
    if not names:
        raise BenchError("none of these methods has a search space (or a --grid) to tune")
    points = {m: candidates(catalogue.get(m), args.budget, request.grids.get(m)) for m in names}
    keys = {m: list(points[m][0]) for m in names}
    # a choice needs every candidate's runs: wait for those another runner holds
    request = replace(request, methods=tuple(names), seeds=tuning_seeds(args.seeds), first_world=TUNING_WORLD_BASE,
                      split="validation", grids={}, candidates=points, wait=True)
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
    fn, direction = crit[args.criterion]
    out_dir = Path(request.out)
    rows: dict[str, dict[str, dict]] = {}
    extended: dict[str, list[dict]] = {m: [] for m in names}
    compute, todo = 0.0, names
    stopped: dict[str, list[dict]] = {}          # candidates Ray Tune's scheduler stopped early, per method
    for rnd in range(args.extend + 1):
        p = plan(replace(request, methods=tuple(todo), candidates={m: points[m] for m in todo}))
        print(f"tuning {p.stream.name} on validation pairs{f' (grid extension {rnd})' if rnd else ''}: "
              f"{len(todo)} methods, seeds {', '.join(map(str, p.seeds))}, "
              f"world{'s' if request.worlds > 1 else ''} {', '.join(map(str, sorted({r.world for r in p.runs})))}; "
              f"{len(p.todo)} runs to do, {p.skipped} already done", file=sys.stderr)
        if request.execution.executor == "ray":
            from .ray_tune import run_trials
            failures, stopped_now = run_trials(p, request, args.scheduler, fn, direction, rnd,
                                               {s["label"] for v in stopped.values() for s in v})
            for m, rows_stopped in stopped_now.items():
                stopped.setdefault(m, []).extend(rows_stopped)
        else:
            failures = execute(p, request).failures
        if failures:
            raise BenchError(f"{len(failures)} tuning runs failed (first: {failures[0][0].row} "
                             f"{failures[0][0].run_text}: {failures[0][1]}); nothing written — fix the cause and "
                             "rerun (finished runs are kept)")
        scored, seconds = _score(p, out_dir, fn, keys, {s["label"] for v in stopped.values() for s in v})
        rows.update(scored)
        compute += seconds
        if rnd == args.extend:
            break
        todo = []
        for m in names:
            best, _ = select(list(rows[m].values()), direction)
            for k, point in extension(catalogue.get(m), points[m], best["options"]):
                points[m].append(point)
                extended[m].append({"round": rnd + 1, "option": k, "edge": best["options"][k], "added": point[k]})
                print(f"{m}: optimum {k} = {best['options'][k]} at its grid's edge; trying {point[k]}", file=sys.stderr)
                todo.append(m)
        todo = list(dict.fromkeys(todo))
        if not todo:
            break
    result = {}
    for m in names:
        cands = list(rows[m].values())
        best, ties = select(cands, direction)
        edge = [k for k, _ in extension(catalogue.get(m), points[m], best["options"])]
        result[m] = {"chosen": best["options"], "search_space": {k: [c[k] for c in points[m]] for k in keys[m]},
                     "candidates": cands, "ties": ties, "extended": extended[m], "still_at_edge": edge,
                     **({"stopped_early": stopped[m]} if m in stopped else {})}
        print(f"{m}: {best['label']} ({args.criterion} {best['score']:.2f})" if best["score"] is not None
              else f"{m}: no score", file=sys.stderr)
        if ties:
            print(f"warning: {m}: every candidate ties with the default (no paired difference beyond one standard "
                  f"error over {len(best['per_seed'])} runs); the default is kept — more seeds or a wider grid would "
                  "tell them apart", file=sys.stderr)
        if edge:
            print(f"warning: {m}: the optimum is still at the edge of its grid for {', '.join(edge)} after "
                  f"{args.extend} extension{'s' if args.extend != 1 else ''} (--extend)", file=sys.stderr)
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
        "criterion": args.criterion, "direction": direction, "rule": RULE,
        "split": "validation: 10% of each source's training pairs held out of training (bench.scenario)",
        "seeds": p.seeds, "orders": request.orders, "worlds": list(request.world_range), "budget": args.budget,
        "extend": args.extend,
        "train": asdict(first.train), "loss": asdict(first.loss),
        "code_version": code_version(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_seconds": round(time.perf_counter() - t0, 1), "run_seconds": round(compute, 1),
        "jobs": p.jobs, "executor": request.execution.executor,
        **({"scheduler": args.scheduler} if request.execution.executor == "ray" else {}),
        "methods": {**kept, **result}})
    print(f"tuned settings written to {target}" + (f" (kept from {before_path}: {', '.join(kept)})" if kept else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

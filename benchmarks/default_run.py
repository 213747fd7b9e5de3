"""The default comparison, ``python -m bench.run --methods all``, timed against an earlier commit, and its
results checked against a reference within rounding tolerance.

Timing. The earlier commit (default ``6e55fd7``, the reference of the speed work) is checked out into a
temporary git worktree; the two commands run in turn, ``--repeats`` times each, alternating which goes first
(A B, B A, …), each into a fresh results folder, from a neutral working directory (so neither imports the
other's code), each with its own defaults (the earlier one ran serially; this one uses every core).
Printed: each side's wall seconds, their median and the ratio of medians.

Results. A speed change may move results at rounding level only (float operations in another order):
against ``--reference`` (a commit, run once in its own worktree, or a folder of its results; default the
timed base), every quality metric of every method's summary (the table's mean over its runs) must move by
less than ``TOLERANCE`` (0.05) of that method's run-to-run standard deviation in the reference, or by less
than ``FLOOR`` (1e-4) where that deviation is 0. Printed: the number of run files whose matrices are
identical, the largest ratio |Δ mean| / std with its method and metric, and the verdict. Where a commit
in between changed results on purpose (tuned options, method fixes), compare with a later ``--reference``.

Usage: ``python benchmarks/default_run.py [--base 6e55fd7] [--repeats 1] [--reference COMMIT|DIR]
[--keep DIR] [--args '--methods all']``. Needs git and this checkout's history. A repeat takes minutes (the
earlier commit about five on two cores).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd, env, cwd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


TOLERANCE = 0.05      # of a method's run-to-run standard deviation
FLOOR = 1e-4          # absolute, where that deviation is 0


def run_files(folder: Path) -> dict[str, dict]:
    return {p.relative_to(folder).as_posix(): json.loads(p.read_text())
            for p in sorted(folder.glob("*/runs/*/seed*.json"))}


def drift(new: dict[str, dict], ref: dict[str, dict]) -> list[tuple[float, str, str, float, float]]:
    """Per method (a stream's label) and quality metric: (ratio, method, metric, |Δ mean|, std), largest
    ratio first. ``new`` and ``ref``: run files by relative path (``stream/runs/row/seed….json``). The ratio is
    |Δ mean| / std, the std the reference's run-to-run sample standard deviation; where it is 0 the ratio is
    |Δ mean| · TOLERANCE / FLOOR (so that the one threshold, ratio < TOLERANCE, reads |Δ mean| < FLOOR). A
    reference run file missing here, or a metric with values on one side only, is an error; rows only this
    checkout has are not compared."""
    sys.path.insert(0, str(ROOT))
    from bench.metrics import BY_KEY
    groups: dict[str, tuple[list, list]] = {}
    for path, run in ref.items():
        if path not in new:
            raise SystemExit(f"error: {path} is in the reference but not in this checkout's results")
        stream, _, row, _ = path.split("/")
        label = f"{stream}/{row}"
        groups.setdefault(label, ([], []))
        groups[label][0].append(run["summary"])
        groups[label][1].append(new[path]["summary"])
    out = []
    for label, (rs, ns) in sorted(groups.items()):
        for key in rs[0]:
            metric = BY_KEY.get(key)
            if metric is None or metric.higher is None:
                continue
            r = [s[key] for s in rs if s.get(key) is not None]
            n = [s[key] for s in ns if s.get(key) is not None]
            if len(r) != len(n):
                raise SystemExit(f"error: {label} {key}: {len(r)} values in the reference, {len(n)} here")
            if not r:
                continue
            delta = abs(statistics.fmean(n) - statistics.fmean(r))
            std = statistics.stdev(r) if len(r) > 1 else 0.0
            ratio = delta / std if std > 0 else delta * TOLERANCE / FLOOR
            out.append((ratio, label, key, delta, std))
    return sorted(out, reverse=True)


def report_drift(new: dict[str, dict], ref: dict[str, dict], name: str) -> bool:
    same = sum(run["matrices"] == ref.get(path, {}).get("matrices") for path, run in new.items())
    print(f"run files' matrices: {same} of {len(new)} identical to {name}'s")
    rows = drift(new, ref)
    if not rows:
        return True
    ratio, label, key, delta, std = rows[0]
    ok = ratio < TOLERANCE
    print(f"largest move of a method's mean against {name}: {ratio:.4f} of its run-to-run std ({label}, {key}: "
          f"|Δ| {delta:.3g}, std {std:.3g}); every metric of every method below {TOLERANCE}: "
          f"{'yes' if ok else 'NO'}")
    for r in rows[1:]:
        if r[0] >= TOLERANCE:
            print(f"  also above: {r[1]} {r[2]}: {r[0]:.3f} (|Δ| {r[3]:.3g}, std {r[4]:.3g})")
    return ok


def worktree(commit: str, where: Path) -> Path:
    if not where.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), commit], check=True,
                       stdout=subprocess.DEVNULL)
    return where


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="6e55fd7")
    p.add_argument("--repeats", type=int, default=1, help="timed pairs (0: no timing, no base: this checkout "
                   "runs once and its results are checked against --reference)")
    p.add_argument("--keep", help="keep the result folders here")
    p.add_argument("--reference", help="a commit (run once) or a folder of its results (default: --base's "
                   "results): this checkout's summaries must match it within rounding tolerance")
    p.add_argument("--args", default="--methods all", help="bench.run's arguments for both sides (default "
                   "'--methods all'; the test suite runs a tiny one so this script cannot rot)")
    args = p.parse_args(argv)
    if args.repeats == 0 and args.reference is None:
        p.error("--repeats 0 checks results only: give --reference")
    def is_commit(rev: str) -> bool:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                              stdout=subprocess.DEVNULL).returncode == 0
    if args.repeats and not is_commit(args.base):
        p.error(f"--base {args.base!r} is not a commit of this checkout")
    if args.reference is not None and not Path(args.reference).is_dir() and not is_commit(args.reference):
        p.error(f"--reference {args.reference!r} is neither a commit of this checkout nor a folder of results")
    work = Path(args.keep or tempfile.mkdtemp(prefix="cmcl-default-run-"))
    work.mkdir(parents=True, exist_ok=True)
    base = worktree(args.base, work / "base-checkout") if args.repeats else work / "base-checkout"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    sides = {"this checkout": dict(env, PYTHONPATH=str(ROOT)), f"commit {args.base}": dict(env, PYTHONPATH=str(base))}
    times = {name: [] for name in sides}
    neutral = work / "cwd"
    neutral.mkdir(exist_ok=True)
    reference = None if args.reference is None else Path(args.reference)

    def bench_run(out: Path) -> list[str]:
        return [sys.executable, "-m", "bench.run", *shlex.split(args.args), "--out", str(out)]
    try:
        if reference is not None and not reference.is_dir():      # a commit: its results, once
            checkout = worktree(args.reference, work / "reference-checkout")
            reference = work / "reference"
            if not any(reference.glob("*/runs/*/seed*.json")):
                subprocess.run(bench_run(reference), env=dict(env, PYTHONPATH=str(checkout)), cwd=neutral, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.repeats == 0:
            subprocess.run(bench_run(work / "new-0"), env=sides["this checkout"], cwd=neutral, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for r in range(args.repeats):
            for _k, (name, e) in enumerate(sides.items() if r % 2 == 0 else reversed(list(sides.items()))):
                out = work / f"{'new' if name == 'this checkout' else 'base'}-{r}"
                times[name].append(timed(bench_run(out), e, neutral))
                print(f"repeat {r + 1}: {name}: {times[name][-1]:.1f} s", flush=True)
    finally:
        for tree in (base, work / "reference-checkout"):
            if tree.exists():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if args.repeats:
        med = {name: statistics.median(t) for name, t in times.items()}
        new, old = med["this checkout"], med[f"commit {args.base}"]
        print(f"median wall: this checkout {new:.1f} s, commit {args.base} {old:.1f} s: {old / new:.2f}x faster")
    ok = report_drift(run_files(work / "new-0"), run_files(reference or work / "base-0"),
                      args.reference or f"commit {args.base}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

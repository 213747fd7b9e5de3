"""The default comparison, ``python -m bench.run --methods all``, timed against an earlier commit.

What runs. The earlier commit (default ``6e55fd7``, the reference of the speed issue) is checked out into a
temporary git worktree; the two commands run in turn, ``--repeats`` times each (A B A B …), each into a
fresh results folder, from a neutral working directory (so neither imports the other's code), each with
its own defaults (the earlier one ran serially; this one uses every core). Printed: each side's wall
seconds, their median, the ratio of medians, and whether the two sides' run files hold the same metric
matrices (the speed work must not change results).

Usage: ``python benchmarks/default_run.py [--base 6e55fd7] [--repeats 1] [--keep DIR] [--args '--methods all']``.
Needs git and this
checkout's history. A repeat takes minutes (the earlier commit about four on two cores).
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


def matrices(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): json.loads(p.read_text())["matrices"]
            for p in sorted(folder.glob("*/runs/*/seed*.json"))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="6e55fd7")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--keep", help="keep the result folders here")
    p.add_argument("--args", default="--methods all", help="bench.run's arguments for both sides (default "
                   "'--methods all'; the test suite runs a tiny one so this script cannot rot)")
    args = p.parse_args(argv)
    work = Path(args.keep or tempfile.mkdtemp(prefix="cmcl-default-run-"))
    work.mkdir(parents=True, exist_ok=True)
    base = work / "base-checkout"
    if not base.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base], check=True,
                       stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    sides = {"this checkout": dict(env, PYTHONPATH=str(ROOT)), f"commit {args.base}": dict(env, PYTHONPATH=str(base))}
    times = {name: [] for name in sides}
    neutral = work / "cwd"
    neutral.mkdir(exist_ok=True)
    try:
        for r in range(args.repeats):
            for _k, (name, e) in enumerate(sides.items() if r % 2 == 0 else reversed(list(sides.items()))):
                out = work / f"{'new' if name == 'this checkout' else 'base'}-{r}"
                cmd = [sys.executable, "-m", "bench.run", *shlex.split(args.args), "--out", str(out)]
                times[name].append(timed(cmd, e, neutral))
                print(f"repeat {r + 1}: {name}: {times[name][-1]:.1f} s", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    med = {name: statistics.median(t) for name, t in times.items()}
    new, old = med["this checkout"], med[f"commit {args.base}"]
    a, b = matrices(work / "new-0"), matrices(work / "base-0")
    differ = sorted({k.split("/runs/")[1].split("/")[0] for k in a if a[k] != b.get(k)})
    print(f"median wall: this checkout {new:.1f} s, commit {args.base} {old:.1f} s: {old / new:.2f}x faster")
    print(f"run files' matrices: {len(a) - sum(a[k] != b.get(k) for k in a)} of {len(a)} identical"
          + (f"; different for {', '.join(differ)} (expected where a commit in between changed results on "
             f"purpose: tuned options, method fixes; compare with a later --base to isolate speed work)"
             if differ else ""))


if __name__ == "__main__":
    main()

"""What the Ray executor costs over the local pool on one machine: the same sweep, ``--executor local`` and
``--executor ray`` (a new local Ray cluster) with the same ``--jobs``, timed as whole processes in turn
(A B, B A, …), each into a fresh results folder. Prints each side's wall seconds, their medians, the ratio
Ray / local of the medians, and whether the two sides' run files are equal (they must be).

Where the difference comes from: Ray starts its cluster (a few seconds) and each Ray worker is a fresh
interpreter that imports torch and Avalanche and builds the stream once (then keeps it for its later runs),
while the local pool forks workers from a process that did that once. It is a fixed cost per sweep: the
ratio falls as a sweep grows (``--seeds``, ``--methods``).

Usage: ``python benchmarks/ray_cost.py [--repeats 3] [--args '--stream sim-paper --methods vanilla,dns
--seeds 3'] [--jobs 2]``. Needs Ray (pip install 'cmcl-bench[ray]').
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
SWEEP = "--stream sim-paper --methods vanilla,dns --seeds 3"


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def records(out: Path) -> dict:
    """The run files' scientific content (the time fields aside)."""
    out_ = {}
    for p in sorted(out.glob("*/runs/*/seed*.json")):
        r = json.loads(p.read_text())
        out_[p.relative_to(out).as_posix()] = (r["config_hash"], r["matrices"],
                                               {k: v for k, v in r["summary"].items() if k != "train_seconds"})
    return out_


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--args", default=SWEEP, help=f"the sweep's bench.run options (default: {SWEEP!r})")
    args = p.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
    base = [sys.executable, "-m", "bench.run", *shlex.split(args.args), "--jobs", str(args.jobs), "--no-figures"]
    seconds: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="ray-cost-") as tmp:
        for i in range(args.repeats):
            for side in (("local", "ray") if i % 2 == 0 else ("ray", "local")):
                out = Path(tmp) / f"{side}{i}"
                seconds[side].append(timed(base + ["--out", str(out), "--executor", side], env))
                print(f"{side:5s} {seconds[side][-1]:6.1f} s", flush=True)
        same = records(Path(tmp) / "local0") == records(Path(tmp) / "ray0")
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print(f"\nsweep: bench.run {args.args} --jobs {args.jobs}")
    print(f"local pool: median {med['local']:.1f} s   Ray (a new local cluster): median {med['ray']:.1f} s")
    print(f"Ray / local: {med['ray'] / med['local']:.2f}   run files equal: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

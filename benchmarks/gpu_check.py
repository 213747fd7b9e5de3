"""One-GPU check: what a run costs on one NVIDIA GPU at the paper's size, in one table.

What runs, on generated paper-scale feature banks (``paper_scale.write_banks``: d = 1024, 10,000 training and
1,000 test pairs per source, the ``paper`` stream's 11 steps), with no network:

1. ``vanilla`` and ``dns`` (λ_min = 1e-3) through the Python API on the device, ``--epochs`` per step: the
   median time per step, iterations per second, the peak device memory;
2. host synchronisations per iteration of those runs: the values read on the host (``bench.devices.host``,
   the only way the project reads one) with two epochs per step minus with one, per extra iteration — 0
   when nothing in the hot loop waits for the device;
3. the same two runs on the CPU: the largest difference of any quality metric of the summary between the
   device and the CPU (float rounding in another order; a large value is a device bug);
4. ``python -m bench.run --stream paper --methods all --seeds 1 --device DEV`` with ``--jobs`` 1, 4 and 8 on
   the one device (``--sweep-epochs`` per step): runs per hour.

``--dry-run`` does all of it on the CPU at tiny sizes (d = 32, 64 training pairs), so the script runs in the
test suite and cannot rot; the numbers it then prints are not a GPU's. Budget: about 8 minutes on one recent
GPU with the defaults (not measured by this project: its machines have no GPU).

Usage: ``python benchmarks/gpu_check.py [--device cuda] [--dry-run] [--banks DIR] [--epochs 1]
[--sweep-epochs 1] [--jobs 1,4,8] [--methods all]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from paper_scale import ENCODER, write_banks  # noqa: E402

import bench.devices  # noqa: E402
import bench.runner  # noqa: E402,F401  (imported before counting: see one_run)
import methods  # noqa: E402

methods.registry()          # every method's module, so each binds the real ``host`` before any is counted
HOST = bench.devices.host

PAPER = dict(dim=1024, train=10_000, test=1_000, rank=300)
TINY = dict(dim=32, train=64, test=32, rank=8)
PROBED = ("vanilla", "dns")


def one_run(method: str, banks: Path, device: str, epochs: int) -> tuple[dict, int]:
    """The run's record and the number of host reads while it ran (``bench.devices.host`` replaced by a
    counter in every module that imported it by name; all of them are imported above, so none binds the
    counter for good)."""
    from bench.api import run
    calls = [0]

    def counting(x):
        calls[0] += 1
        return HOST(x)
    patched = [m for m in list(sys.modules.values()) if getattr(m, "host", None) is HOST]
    for m in patched:
        m.host = counting
    try:
        options = {"lambda_min": 1e-3} if method == "dns" else {}
        record = run(method, "paper", 0, encoder=ENCODER, banks=str(banks), epochs=epochs, device=device,
                     threads=1, options=options).record
    finally:
        for m in patched:
            m.host = HOST
    return record, calls[0]


def quality_gap(a: dict, b: dict) -> float:
    from bench.metrics import BY_KEY
    return max(abs(a[k] - b[k]) for k in a if k in BY_KEY and BY_KEY[k].higher is not None
               and a[k] is not None and b.get(k) is not None)


def sweep(banks: Path, device: str, methods: str, jobs: int, epochs: int, work: Path) -> tuple[int, float]:
    """(runs, wall seconds) of one ``bench.run`` sweep."""
    out = work / f"sweep-jobs{jobs}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "bench.run", "--stream", "paper", "--encoder", ENCODER, "--banks", str(banks),
           "--methods", methods, "--seeds", "1", "--jobs", str(jobs), "--device", device, "--epochs", str(epochs),
           "--no-figures", "--out", str(out)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"error: the sweep with --jobs {jobs} failed (exit {r.returncode}): "
                         f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'no message'}")
    return len(list(out.glob("*/runs/*/seed*.json"))), wall


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dry-run", action="store_true", help="on the CPU at tiny sizes (the test suite's run)")
    p.add_argument("--banks", help="folder of the generated banks (default: a temporary one)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per step of the probed runs (default 1)")
    p.add_argument("--sweep-epochs", type=int, default=1, help="epochs per step of the sweeps (default 1)")
    p.add_argument("--jobs", default="1,4,8", help="the sweeps' --jobs (default 1,4,8)")
    p.add_argument("--methods", default="all", help="the sweeps' --methods (default all)")
    args = p.parse_args(argv)
    device = "cpu" if args.dry_run else args.device
    if not args.dry_run and device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device here: --dry-run runs the whole check on the CPU at tiny sizes")
    torch.set_num_threads(1)
    sizes = TINY if args.dry_run else PAPER
    with tempfile.TemporaryDirectory(prefix="cmcl-gpu-check-") as tmp:
        work = Path(tmp)
        banks = Path(args.banks) if args.banks else work / "banks"
        t0 = time.perf_counter()
        write_banks(banks, sizes["dim"], sizes["train"], sizes["test"], sizes["rank"])
        print(f"gpu_check{' --dry-run (CPU, tiny sizes: not a GPU measurement)' if args.dry_run else ''}: "
              f"device {device}"
              + (f" ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else "")
              + f"; torch {torch.__version__}; banks d = {sizes['dim']}, {sizes['train']} train / "
              f"{sizes['test']} test pairs per source ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows = []
        one_run("vanilla", banks, device, 1)     # warm-up: reading the banks and building the stream, once
        for method in PROBED:
            rec1, reads1 = one_run(method, banks, device, args.epochs)
            rec2, reads2 = one_run(method, banks, device, args.epochs + 1)
            cpu = rec1 if device == "cpu" else one_run(method, banks, "cpu", args.epochs)[0]
            steps = [s for s in rec1["timings"]["steps"] if s["iterations"]]
            its1 = sum(s["iterations"] for s in rec1["timings"]["steps"])
            its2 = sum(s["iterations"] for s in rec2["timings"]["steps"])
            rows.append((method, statistics.median(s["train_seconds"] for s in steps),
                         statistics.median(s["iterations"] / s["train_seconds"] for s in steps),
                         rec1["timings"].get("peak_device_mb"), (reads2 - reads1) / max(its2 - its1, 1),
                         quality_gap(rec1["summary"], cpu["summary"])))
        print(f"\n{'run':24s} {'s/step':>8s} {'it/s':>8s} {'device MB':>10s} {'host reads/it':>14s} "
              f"{'max |Δ| vs CPU':>15s}")
        for method, sec, its, mem, reads, gap in rows:
            print(f"{method + f' ({args.epochs} epoch/step)':24s} {sec:8.2f} {its:8.1f} "
                  f"{'-' if mem is None else f'{mem:.0f}':>10s} {reads:14.3f} {gap:15.2e}")
        print(f"\n{'sweep (--methods ' + args.methods + ')':30s} {'runs':>5s} {'wall s':>8s} {'runs/hour':>10s}")
        for jobs in [int(j) for j in args.jobs.split(",")]:
            n, wall = sweep(banks, device, args.methods, jobs, args.sweep_epochs, work)
            print(f"{f'--jobs {jobs}':30s} {n:5d} {wall:8.1f} {3600 * n / wall:10.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

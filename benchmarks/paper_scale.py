"""The paper's protocol at its real size, on generated feature banks: time per step, iterations per second
and peak memory, on the CPU and (when there is one) on a GPU.

What runs. The ``paper`` stream (11 steps over 7 sources, the paper's pairs and metrics) reads banks of an
encoder named ``generated``, written here once: ``--dim`` wide (1024, ImageBind's), ``--train`` pairs per
source (10,000) and ``--test`` test pairs. Each modality's features are unit vectors near a shared
``--rank``-dimensional subspace (300), so DNS's projectors have ranks of a few hundred as on real features.
Each method (``--methods``, default vanilla and dns, with λ_min = 1e-3 for those ranks) runs one seed
through the Python API — the command line's own path — on each device; the run record gives the per-step
training time and iterations and the run's peak memory. The hot loop keeps every value on the device (no
host synchronisation per iteration: ``tests/test_devices.py`` checks it), so a GPU run is not slowed by the
host.

Usage: ``python benchmarks/paper_scale.py [--epochs 5] [--methods vanilla,dns] [--devices cpu,cuda]
[--banks DIR] [--dim 1024] [--train 10000] [--test 1000] [--rank 300]``. Writing the banks takes about a
minute and ~1 GB of disk (kept in ``--banks`` for the next call).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import streams  # noqa: E402
from bench.features.bank import SplitFeatures, bank_file, write_split  # noqa: E402

ENCODER = "generated"


def write_banks(root: Path, dim: int, n_train: int, n_test: int, rank: int, classes: int = 50) -> None:
    spec = streams.load("paper")
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=g))[0]          # the shared subspace
    for source, cfg in spec.sources.items():
        mods = cfg["modalities"]
        with_texts = cfg.get("class_texts", True)
        for split, n in (("train", n_train), ("test", n_test)):
            path = bank_file(root, ENCODER, source, split)
            if path.is_file():
                continue
            labels = torch.randint(0, classes, (n,), generator=g)
            centres = torch.randn(classes, rank, generator=g)
            latent = centres[labels] + 0.8 * torch.randn(n, rank, generator=g)
            feats = {}
            for m in mods:       # each modality: its own view of the shared latent, and its own noise
                mix = torch.linalg.qr(torch.randn(rank, rank, generator=g))[0] * 0.3 + torch.eye(rank)
                view = latent + 4.0 * torch.randn(n, rank, generator=g)
                x = (view @ mix) @ basis.T + 0.05 * torch.randn(n, dim, generator=g)
                feats[m] = torch.nn.functional.normalize(x, dim=1).float()
            texts = torch.nn.functional.normalize(centres @ basis.T, dim=1).float() if with_texts else None
            data = SplitFeatures(feats, [f"{source}-{split}-{i}" for i in range(n)],
                                 labels if with_texts else None, texts,
                                 [f"class {c}" for c in range(classes)] if with_texts else None)
            write_split(path, data, source=source, split=split, encoder=ENCODER)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--banks", default="paper-scale-banks")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--train", type=int, default=10_000)
    p.add_argument("--test", type=int, default=1_000)
    p.add_argument("--rank", type=int, default=300)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--methods", default="vanilla,dns")
    p.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from bench.api import run
    root = Path(args.banks)
    t0 = time.perf_counter()
    write_banks(root, args.dim, args.train, args.test, args.rank)
    print(f"banks: {root}/{ENCODER}/ (d = {args.dim}, {args.train} train / {args.test} test pairs per source, "
          f"{time.perf_counter() - t0:.0f} s); torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.epochs} epochs per step, batch 64")
    for device in args.devices.split(","):
        for method in args.methods.split(","):
            options = {"lambda_min": 1e-3} if method.startswith("dns") else {}
            r = run(method, "paper", 0, encoder=ENCODER, banks=str(root), epochs=args.epochs, device=device,
                    threads=args.threads, options=options).record
            steps = r["timings"]["steps"]
            secs = [s["train_seconds"] for s in steps]
            its = [s["iterations"] / s["train_seconds"] for s in steps if s["iterations"]]
            mem = r["timings"].get("peak_device_mb")
            ranks = r["method_state"].get("projector_ranks", [])
            top = max((x.get("input_rank", 0) for x in ranks), default=None)
            print(f"  {device:5s} {method:8s} train {sum(secs):7.1f} s; per step median {statistics.median(secs):6.1f} s "
                  f"(min {min(secs):.1f}, max {max(secs):.1f}); {statistics.median(its):6.1f} it/s; peak RSS "
                  f"{r['timings']['peak_rss_mb']:.0f} MB" + (f", device {mem:.0f} MB" if mem is not None else "")
                  + (f"; largest input-projector rank {top}" if top is not None else "")
                  + f"; wall (with evaluation) {r['timings']['wall_seconds']:.1f} s; R@10 {r['summary']['r10']:.2f}")


if __name__ == "__main__":
    main()

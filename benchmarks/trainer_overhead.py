"""Trainer overhead: per-iteration time of ``bench.trainer.Trainer`` relative to a plain PyTorch loop.

What is measured. For each feature width ``d`` (default: 1024, the paper's ImageBind width, and 128, the
``sim-paper`` stream's width) a one-step synthetic stream with ``d``-dimensional features is simulated and
two things are timed on the same data, shapes, batch size and iteration count:

- trainer: ``Trainer(scenario, vanilla, heads, ...).train_experience(0)``, i.e. the project's hot loop
  with the ``vanilla`` method (no hooks), timed by its own ``train_seconds`` record;
- bare: the same math written inline the way a PyTorch user would -- two ``nn.Linear`` heads, randperm +
  split, index the two feature matrices, symmetric InfoNCE on ``za @ zb.T / temperature`` with
  ``F.cross_entropy``, ``zero_grad(set_to_none=True)``, ``backward``, ``AdamW(foreach=False)`` step -- with
  no Context, no hooks and no batching helper.

The trainer computes the same function with InfoNCE's gradient written out (``bench.loss.info_nce``: one
autograd node) and torch's fused AdamW, so a ratio below 1 is expected. Both
start from identity heads each repeat. The bare loop draws its permutations from a generator seeded as the
trainer seeds its own, so the two runs see the same batches in the same order; after the warm-up the script
prints the largest difference between the two final head weights, which is what "same math" means here
(float rounding in another order: below ``AGREE``).

Why a ratio of medians. The machine's cores are shared and noisy, so an absolute ms/it says little and a
single wall time says nothing. Trainer and bare passes are interleaved (the order flips every repeat, so a
slow drift hits both equally), each pass is N full iterations, and the reported figures are the median
per-iteration time of each side, their ratio, and the median of the per-repeat ratios (robust to a repeat
where one side was hit by a burst of load). The target is ratio <= 1.3: the trainer may add bookkeeping,
not a second loop's worth of work.

Usage: ``python benchmarks/trainer_overhead.py [--repeats N] [--dims 1024,128]``. Always exits 0; the
verdict is the printed PASS / ABOVE TARGET.
"""
from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import methods
from bench.heads import Heads
from bench.loss import LossConfig
from bench.runner import get_scenario
from bench.scenario import pair_tensors
from bench.streams import load
from bench.trainer import TrainConfig, Trainer

TARGET = 1.3
AGREE = 1e-4                # largest |Δ weight| after the warm-up pass that counts as the same math
SEED, STEP = 0, 0
TRAIN_PAIRS = 2048          # a multiple of the batch size: every batch is full, on both sides

STREAM_TOML = """\
name = "overhead-d{dim}"
description = "One-step synthetic stream for benchmarks/trainer_overhead.py"

[simulation]
seed = 0
dim = {dim}

[modalities.text]
[modalities.vision]

[sources.pairs]
modalities = ["text", "vision"]
classes = 16
train = {train}
test = 16

[[steps]]
source = "pairs"
pair = ["text", "vision"]
metrics = ["recall"]
"""


def build_scenario(dim: int, tmpdir: Path):
    path = tmpdir / f"overhead-d{dim}.toml"
    path.write_text(STREAM_TOML.format(dim=dim, train=TRAIN_PAIRS))
    return get_scenario(load(str(path)))


def run_trainer(scenario, train_cfg: TrainConfig, loss_cfg: LossConfig):
    heads = Heads(scenario.in_dims, out_dim=max(scenario.in_dims.values()), seed=SEED)
    trainer = Trainer(scenario, methods.get("vanilla")(), heads, train_cfg, loss_cfg, SEED)
    rec = trainer.train_experience(STEP)
    return rec["train_seconds"], rec["iterations"], heads


def identity_linear(d: int) -> nn.Linear:
    lin = nn.Linear(d, d)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(d))
        lin.bias.zero_()
    return lin


def run_bare(xa_all: torch.Tensor, xb_all: torch.Tensor, train_cfg: TrainConfig, loss_cfg: LossConfig):
    d = xa_all.shape[1]
    ha, hb = identity_linear(d), identity_linear(d)
    opt = torch.optim.AdamW([*ha.parameters(), *hb.parameters()], lr=train_cfg.lr,
                            weight_decay=train_cfg.weight_decay, foreach=False)
    labels = torch.arange(train_cfg.batch_size)
    temperature, bs, n = loss_cfg.temperature, train_cfg.batch_size, len(xa_all)
    # The trainer's seed formula, so both sides draw the same permutations and can be compared bit for bit.
    gen = torch.Generator().manual_seed(1_000_003 * SEED + STEP)
    iters = 0
    t0 = time.perf_counter()
    for _ in range(train_cfg.epochs):
        for idx in torch.randperm(n, generator=gen).split(bs):
            xa, xb = xa_all[idx], xb_all[idx]
            logits = (ha(xa) @ hb(xb).T) / temperature
            loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            iters += 1
    return time.perf_counter() - t0, iters, (ha, hb)


def weight_gap(heads: Heads, pair, bare) -> float:
    return max(float((p - q).detach().abs().max()) for m, lin in zip(pair, bare)
               for p, q in zip(heads[m].parameters(), lin.parameters()))


def measure(dim: int, repeats: int, iters_target: int, batch_size: int, tmpdir: Path) -> dict:
    scenario = build_scenario(dim, tmpdir)
    pair = scenario.tasks[STEP].pair
    batches_per_epoch = TRAIN_PAIRS // batch_size
    train_cfg = TrainConfig(epochs=max(1, math.ceil(iters_target / batches_per_epoch)), batch_size=batch_size)
    loss_cfg = LossConfig()
    # The trainer reads the step's matrices the same way: the bare loop indexes the very same tensors.
    xa_all, xb_all = pair_tensors(scenario.benchmark.train_stream[STEP].dataset, scenario.tasks[STEP])

    # Warm-up: first-call costs (allocator, kernels, lazy imports) land here, and the two final states are
    # compared to confirm both loops did the same math.
    _, it_t, heads = run_trainer(scenario, train_cfg, loss_cfg)
    _, it_b, bare = run_bare(xa_all, xb_all, train_cfg, loss_cfg)
    if it_t != it_b:
        raise SystemExit(f"d={dim}: trainer ran {it_t} iterations, bare loop {it_b}; the comparison is void")
    gap = weight_gap(heads, pair, bare)

    t_ms, b_ms = [], []
    for r in range(repeats):
        order = ("trainer", "bare") if r % 2 == 0 else ("bare", "trainer")
        for side in order:
            gc.collect()    # a collection triggered by the other side's garbage must not be billed to this one
            if side == "trainer":
                secs, n, _ = run_trainer(scenario, train_cfg, loss_cfg)
                t_ms.append(1e3 * secs / n)
            else:
                secs, n, _ = run_bare(xa_all, xb_all, train_cfg, loss_cfg)
                b_ms.append(1e3 * secs / n)
    trainer_med, bare_med = statistics.median(t_ms), statistics.median(b_ms)
    return {"dim": dim, "batch": batch_size, "iterations": it_t, "gap": gap,
            "trainer": trainer_med, "bare": bare_med, "ratio": trainer_med / bare_med,
            "pair_ratio": statistics.median(t / b for t, b in zip(t_ms, b_ms)),
            "spread": (min(t_ms), max(t_ms), min(b_ms), max(b_ms))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9, help="interleaved trainer/bare pass pairs (default 9)")
    ap.add_argument("--dims", default="1024,128", help="comma-separated feature widths (default 1024,128)")
    ap.add_argument("--iterations", type=int, default=128, help="iterations per pass, rounded up to whole "
                    f"epochs of {TRAIN_PAIRS} pairs (default 128)")
    ap.add_argument("--batch-size", type=int, default=64, help=f"a divisor of {TRAIN_PAIRS} (default 64)")
    args = ap.parse_args(argv)
    dims = [int(d) for d in args.dims.split(",") if d.strip()]
    if args.repeats < 1 or not dims or min(dims) < 32:
        ap.error("--repeats must be >= 1 and --dims widths >= 32 (the simulator's default subspaces)")
    if args.batch_size < 2 or TRAIN_PAIRS % args.batch_size:
        # A ragged last batch would need the trainer's drop rule copied into the bare loop.
        ap.error(f"--batch-size must be >= 2 and divide {TRAIN_PAIRS}")

    # One thread: the cores are shared, and an intra-op thread pool would mostly measure the neighbours.
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {args.repeats} interleaved repeats, median per-iteration time",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for dim in dims:
            r = measure(dim, args.repeats, args.iterations, args.batch_size, Path(tmp))
            verdict = "PASS" if r["ratio"] <= TARGET else "ABOVE TARGET"
            print(f"d={r['dim']} batch={r['batch']}: trainer {r['trainer']:.3g} ms/it, bare {r['bare']:.3g} ms/it, "
                  f"ratio {r['ratio']:.2f} (target <= {TARGET}) {verdict}", flush=True)
            t_lo, t_hi, b_lo, b_hi = r["spread"]
            print(f"    {r['iterations']} it/pass; median of per-repeat ratios {r['pair_ratio']:.2f}; "
                  f"range trainer {t_lo:.3g}-{t_hi:.3g}, bare {b_lo:.3g}-{b_hi:.3g} ms/it; "
                  f"final weights agree to {r['gap']:.1e}"
                  + ("" if r["gap"] < AGREE else f" — ABOVE {AGREE:g}: not the same math!"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

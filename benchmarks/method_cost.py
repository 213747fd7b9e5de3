"""Per-iteration training cost of every registered method, as a ratio to ``vanilla``.

What is measured: each method trains the first ``--steps`` steps of a stream (default sim-paper, 4 steps,
so that most methods already have something to protect), through the real trainer with the stream's
training settings; its cost is the training time of the LAST step divided by that step's iterations —
hooks, projections, replay, penalties and the step-end bookkeeping (Fisher, covariances, buffers) included.
Evaluation is not timed. Methods are interleaved over ``--repeats`` rounds (the two cores are shared and
noisy) and the reported figure is the median over rounds of the ratio to vanilla measured in the same round.

Usage: ``python benchmarks/method_cost.py [--stream sim-paper] [--steps 4] [--repeats 3] [--methods a,b]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import methods  # noqa: E402
from bench import streams  # noqa: E402
from bench.heads import Heads  # noqa: E402
from bench.loss import LossConfig  # noqa: E402
from bench.runner import get_scenario  # noqa: E402
from bench.trainer import TrainConfig, Trainer  # noqa: E402


def last_step_cost(scenario, name: str, steps: int, train: TrainConfig, seed: int) -> float:
    torch.manual_seed(seed)
    heads = Heads(scenario.in_dims, scenario.head_dim, seed=seed)
    trainer = Trainer(scenario, methods.get(name)(), heads, train, LossConfig(), seed)
    for s in range(steps):
        rec = trainer.train_experience(s)
    return rec["train_seconds"] / max(rec["iterations"], 1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", default="sim-paper")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default="all")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    spec = streams.load(args.stream)
    scenario = get_scenario(spec)
    train = TrainConfig(**spec.train)
    names = [m for m in methods.names() if m != "frozen"] if args.methods == "all" else args.methods.split(",")
    if "vanilla" not in names:
        names = ["vanilla"] + names
    ratios = {m: [] for m in names}
    ms = {m: [] for m in names}
    for r in range(args.repeats):
        order = names if r % 2 == 0 else list(reversed(names))
        cost = {m: last_step_cost(scenario, m, args.steps, train, seed=r) for m in order}
        for m in names:
            ms[m].append(1000 * cost[m])
            ratios[m].append(cost[m] / cost["vanilla"])
    print(f"{spec.name}, step {args.steps} of {len(spec.steps)}, batch {train.batch_size}, 1 thread, "
          f"median of {args.repeats} interleaved rounds")
    print(f"{'method':14s} {'ms/it':>8s} {'× vanilla':>10s}")
    for m in sorted(names, key=lambda m: statistics.median(ratios[m])):
        print(f"{m:14s} {statistics.median(ms[m]):8.2f} {statistics.median(ratios[m]):10.2f}")


if __name__ == "__main__":
    main()

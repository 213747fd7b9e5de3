"""A registered method inside Avalanche's Naive strategy, with the project's metrics in Avalanche's
EvaluationPlugin, and the same run through the project's runner for comparison.

    python examples/avalanche_naive.py --method dns --stream sim-paper
    python examples/avalanche_naive.py --method vanilla --stream toy --replay 200   # + Avalanche replay

With ``--replay N`` Avalanche's own ReplayPlugin is added, storing N pairs in ``bench.bridge.PairBuffer``
(one group per pair); the method's plugin then keeps Avalanche's loader (replay batches hold several
pairs, which only a method without per-batch hooks, such as vanilla, accepts) and the results are no longer
the runner's.
"""
import argparse
import sys

import torch
from avalanche.logging import TextLogger
from avalanche.training.plugins import ReplayPlugin

from bench import api
from bench.bridge import Bridge, PairBuffer
from bench.errors import BenchError


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="l2")
    ap.add_argument("--stream", default="toy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replay", type=int, default=0, help="add Avalanche's ReplayPlugin with a PairBuffer of N pairs")
    ap.add_argument("--log", action="store_true", help="print Avalanche's text log of every metric")
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        b = Bridge(args.method, stream=args.stream, seed=args.seed, own_batches=not args.replay)
        buffer = PairBuffer(args.replay, seed=args.seed) if args.replay else None
        plugins = [ReplayPlugin(mem_size=args.replay, storage_policy=buffer)] if args.replay else []
        strategy = b.strategy(plugins=plugins, loggers=[TextLogger(sys.stdout)] if args.log else [])
        strategy.eval(b.benchmark.test_stream)
        for exp in b.benchmark.train_stream:
            strategy.train(exp)
            strategy.eval(b.benchmark.test_stream)
        naive = b.matrices()
        print(f"{args.method} inside Avalanche's Naive on {args.stream}, seed {args.seed}: R@10 after each step")
        for k, row in enumerate(naive["r10"]):
            print(f"  after {k:2d} steps: " + " ".join(f"{v:5.1f}" for v in row))
        if not args.replay:
            runner = api.run(args.method, args.stream, args.seed).record["matrices"]
            print(f"matrices equal to the runner's: {naive == runner}")
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

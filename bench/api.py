"""The Python API: one method on one stream and seed, from a notebook, exactly as ``python -m bench.run``
runs it — the same defaults (the stream's ``[train]``, its per-encoder settings and tuned settings), the
same validation, the same record — and the trained heads with it::

    from bench.api import run
    result = run("dns", stream="sim-paper", seed=0, epochs=2, options={"lambda_min": 0.001})
    result.record["summary"]["r10"]          # what the run file would hold
    result.heads["text"]                     # the trained nn.Linear of the text modality

Keyword flags are ``python -m bench.run``'s options by their Python names (``epochs``, ``lr``,
``batch_size``, ``protocol``, ``encoder``, ``banks``, ``untuned``, ``device``, ``threads``, ``save_heads``,
``out``, …); ``options`` are the method's own (what ``--set`` gives). Nothing is written unless ``save=True``
(the record goes where the command line would put it, under ``out``, default ``results/``) or
``save_heads=True``.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass

from .errors import BenchError

_NOT_FLAGS = {"methods", "stream", "seeds", "sets", "grids", "labels", "list", "force", "jobs", "executor", "address"}


@dataclass
class Result:
    record: dict          # the run record (bench/reporting/records.py), as the run file holds it
    heads: object         # bench.heads.Heads: heads[modality] is that modality's trained nn.Linear
    run: object           # bench.config.RunSpec: every setting of the run


def _text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _args(method: str, stream: str, seed: int, options: dict | None, flags: dict):
    """The command line's arguments for one run (validated like the command line's)."""
    from .run import build_parser
    args = build_parser().parse_args([])
    unknown = sorted(k for k in flags if k in _NOT_FLAGS or not hasattr(args, k))
    if unknown:
        raise BenchError(f"bench.api: unknown flag {unknown[0]!r} (flags are python -m bench.run's options, "
                         f"e.g. epochs, lr, protocol, encoder, out)")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise BenchError(f"bench.api: seed must be a non-negative integer, got {seed!r}")
    for k, v in flags.items():
        setattr(args, k, v)
    args.methods, args.stream, args.seeds, args.force = method, stream, f"{seed},", True
    args.sets = [f"{method}.{k}={_text(v)}" for k, v in (options or {}).items()]
    return args


def plan_run(method: str, stream: str = "sim-paper", seed: int = 0, *, options: dict | None = None, **flags):
    """The ``RunSpec`` the command line would run for these arguments (every setting resolved: the stream's
    ``[train]``, per-encoder and tuned settings, the method's options), without training: what
    ``bench.bridge`` builds an Avalanche strategy from. Bad input raises ``BenchError``."""
    from .run import plan
    args = _args(method, stream, seed, options, flags)
    with tempfile.TemporaryDirectory(prefix="cmcl-api-") as scratch:
        args.out = scratch
        return plan(args).todo[0]


def run(method: str, stream: str = "sim-paper", seed: int = 0, *, options: dict | None = None,
        save: bool = False, **flags) -> Result:
    """Train and evaluate ``method`` on ``stream`` with ``seed``; return its record and its trained heads.
    Bad input raises ``BenchError`` with the command line's one-line message."""
    import torch

    from .reporting.records import write_run
    from .run import plan
    from .runner import train_run
    args = _args(method, stream, seed, options, flags)
    with tempfile.TemporaryDirectory(prefix="cmcl-api-") as scratch:
        if not save and not args.save_heads:
            args.out = scratch              # nothing is written; finished runs are not read either
        p = plan(args)
        spec = p.todo[0]
        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)     # as the command line: results do not depend on the notebook
        try:
            record, heads = train_run(spec)
        finally:
            torch.set_num_threads(threads)
    if save:
        write_run(spec.path(args.out), record)
    return Result(record, heads, spec)

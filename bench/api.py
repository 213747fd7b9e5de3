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
from .reporting.records import RunRecord

# the command line's flags that choose what a sweep runs, not how one run trains
_NOT_FLAGS = {"methods", "stream", "seeds", "sets", "grids", "labels", "candidates", "split", "force", "jobs",
              "executor", "address", "max_retries", "gpus_per_run", "orders", "worlds", "first_world"}


@dataclass
class Result:
    record: RunRecord     # the run record (bench/reporting/records.py), as the run file holds it
    heads: object         # bench.heads.Heads: heads[modality] is that modality's trained nn.Linear
    run: object           # bench.config.RunSpec: every setting of the run


def _text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _request(method: str, stream: str, seed: int, options: dict | None, flags: dict, order: int = 0, world: int = 0):
    """The command line's request for one run (validated like the command line's)."""
    from .request import FLAGS, Request
    from .tracking import parse_log
    unknown = sorted(k for k in flags if k in _NOT_FLAGS or k not in FLAGS)
    if unknown:
        raise BenchError(f"bench.api: unknown flag {unknown[0]!r} (flags are python -m bench.run's options, "
                         f"e.g. epochs, lr, protocol, encoder, out)")
    from .request import MAX_SEED
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise BenchError(f"bench.api: seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    if "log" in flags:
        flags = {**flags, "log": parse_log(flags["log"])}
    # option values as the command line gives them: parsed and checked by the method's own declarations
    return Request.from_flags(**flags, methods=(method,), stream=stream, seeds=(seed,), force=True,
                              sets={method: {k: _text(v) for k, v in (options or {}).items()}},
                              orders=order + 1, worlds=world + 1)


def _variation(flags: dict) -> tuple[int, int, dict]:
    """``order`` and ``world`` (the one run's task order and world, 0 the stream file's) out of ``flags``."""
    flags = dict(flags)
    picked = [flags.pop("order", 0), flags.pop("world", 0)]
    for name, v in zip(("order", "world"), picked):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise BenchError(f"bench.api: {name} must be an integer >= 0, got {v!r}")
    return picked[0], picked[1], flags


def _the_run(todo: list, order: int, world: int):
    return next(r for r in todo if (r.order, r.world) == (order, world))


def plan_run(method: str, stream: str = "sim-paper", seed: int = 0, *, options: dict | None = None, **flags):
    """The ``RunSpec`` the command line would run for these arguments (every setting resolved: the stream's
    ``[train]``, per-encoder and tuned settings, the method's options), without training: what
    ``bench.bridge`` builds an Avalanche strategy from. Bad input raises ``BenchError``."""
    from dataclasses import replace

    from .run import plan
    order, world, flags = _variation(flags)
    request = _request(method, stream, seed, options, flags, order, world)
    with tempfile.TemporaryDirectory(prefix="cmcl-api-") as scratch:
        return _the_run(plan(replace(request, out=scratch)).todo, order, world)


def run(method: str, stream: str = "sim-paper", seed: int = 0, *, options: dict | None = None,
        save: bool = False, **flags) -> Result:
    """Train and evaluate ``method`` on ``stream`` with ``seed`` (and ``order=``, ``world=``: the task order
    and world, 0 the stream file's); return its record and its trained heads. Bad input raises ``BenchError``
    with the command line's one-line message."""
    from dataclasses import replace

    import torch

    from .reporting.records import write_run
    from .run import plan
    from .runner import train_run
    order, world, flags = _variation(flags)
    request = _request(method, stream, seed, options, flags, order, world)
    with tempfile.TemporaryDirectory(prefix="cmcl-api-") as scratch:
        if not save and not request.save_heads:
            request = replace(request, out=scratch)   # nothing is written; finished runs are not read either
        spec = _the_run(plan(request).todo, order, world)
        threads = torch.get_num_threads()
        torch.set_num_threads(request.execution.threads)   # as the command line: results do not depend on the notebook
        try:
            record, heads = train_run(spec)
        finally:
            torch.set_num_threads(threads)
    if save:
        write_run(spec.path(request.out), record)
    return Result(record, heads, spec)

"""Executors: where planned runs (``RunSpec``) are trained. ``local`` runs them in this process or in a pool
of worker processes, ``ray`` as tasks on a Ray cluster. Both have one signature, ``(runs, sweep, execution)``:
they report to a ``Sweep`` (claim a run before it starts, its start, its record as it arrives — so the caller
saves it at once —, its failure) and read ``bench.request.Execution`` (jobs, threads, address).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .config import RunSpec
from .errors import BenchError

if TYPE_CHECKING:
    from .reporting.records import RunRecord


def _work(item: tuple[RunSpec, int]) -> RunRecord:
    import torch

    from .runner import train_run
    run, threads = item
    torch.set_num_threads(threads)
    return train_run(run)[0]


def start_method(runs: list[RunSpec]) -> str:
    """How pool workers start: forked when every run is on the CPU (they inherit the stream's features built
    here), spawned otherwise: a process forked after its parent initialised CUDA cannot use CUDA."""
    return "fork" if all(r.device.split(":")[0] == "cpu" for r in runs) else "spawn"


class RunLost(Exception):
    """A run an executor lost to the system (its worker or node died) every time it started it; the message
    says how often and why."""


def failure(e: BaseException) -> str:
    """One line for a failed run: a ``BenchError``'s or ``RunLost``'s message, or the exception's type and
    first line."""
    if isinstance(e, (BenchError, RunLost)):
        return str(e)
    first = (str(e).splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


class Sweep:
    """What an executor reports to. This base trains everything and keeps the failures; ``bench.run``'s
    sweep claims runs in the results folder, saves each record and shows progress."""

    def __init__(self) -> None:
        self.failures: list[tuple[RunSpec, str]] = []
        self.elsewhere: list[RunSpec] = []      # runs skipped because another runner still has them

    def claim(self, run: RunSpec) -> bool:
        """Called just before ``run`` starts; False: another runner has it (the sweep says so; when that runner
        may still be at work, the run is added to ``elsewhere``), skip it."""
        return True

    def started(self, run: RunSpec) -> None:
        pass

    def finished(self, run: RunSpec, record: RunRecord) -> None:
        pass

    def failed(self, run: RunSpec, error: BaseException) -> str:
        """A run that raised: listed, in one line (``failure``); the sweep goes on."""
        self.failures.append((run, failure(error)))
        return self.failures[-1][1]


def row_of(run: RunSpec) -> tuple[str, str]:
    """What the scheduler measures: the run's results folder and row (a method or a variant)."""
    return run.result_name, run.row


def next_run(pending: list[RunSpec], seconds: dict, started: set) -> int:
    """Index in ``pending`` of the run a free worker takes: first one run of every row in the planned order
    (which measures the rows), then the longest-measured row's runs (so short runs fill the end of the sweep
    and no worker waits alone on a long one), a row not measured yet (still running, or failed) last, in the
    planned order. ``seconds``: row -> wall seconds of its first finished run; ``started``: rows begun."""
    for i, run in enumerate(pending):
        if row_of(run) not in started:
            return i
    measured = [i for i, run in enumerate(pending) if row_of(run) in seconds]
    if not measured:
        return 0
    return max(measured, key=lambda i: (seconds[row_of(pending[i])], -i))


def run_local(runs: Iterable[RunSpec], sweep: Sweep, execution) -> list[tuple[RunSpec, str]]:
    """Train every run; ``sweep.finished(run, record)`` as each finishes. With ``execution.jobs > 1`` the runs
    go to worker processes (``start_method``), at most ``jobs`` at a time, in the order of ``next_run``
    (results do not depend on it), each claimed just before it starts — so a second runner on the same folder
    takes the others. A run that fails (a diverging run, any exception in it) does not stop the others:
    ``sweep.failed`` lists it; the failures are returned, every one of them."""
    runs = list(runs)
    jobs, threads = min(execution.jobs or 1, max(1, len(runs))), execution.threads

    if jobs == 1:
        for run in runs:
            if not sweep.claim(run):
                continue
            sweep.started(run)
            try:
                record = _work((run, threads))
            except Exception as e:                   # noqa: BLE001 - reported, the sweep goes on
                sweep.failed(run, e)
                continue
            sweep.finished(run, record)
        return sweep.failures
    import multiprocessing as mp
    from concurrent.futures import Future, ProcessPoolExecutor, as_completed
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context(start_method(runs)),
                               initializer=_ignore_interrupts, initargs=(os.getpid(),))
    pending, futures = list(runs), dict[Future, RunSpec]()
    seconds: dict[tuple[str, str], float] = {}
    started: set[tuple[str, str]] = set()

    def submit_more():
        while len(futures) < jobs and pending:
            run = pending.pop(next_run(pending, seconds, started))
            if sweep.claim(run):
                started.add(row_of(run))
                sweep.started(run)
                futures[pool.submit(_work, (run, threads))] = run

    try:
        submit_more()
        while futures:
            fut = next(as_completed(futures))
            run = futures.pop(fut)
            try:
                record = fut.result()
            except Exception as e:                   # noqa: BLE001 - reported, the others' results are kept
                sweep.failed(run, e)
            else:
                seconds.setdefault(row_of(run), record["timings"]["wall_seconds"])
                sweep.finished(run, record)
            submit_more()
    except BaseException:
        # Ctrl-C (or an error saving a result): stop now — queued runs are dropped, running ones killed; every
        # finished run has been saved already
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return sweep.failures


def _ignore_interrupts(parent: int):
    """Pool workers leave Ctrl-C to the parent, which stops them (no traceback from each worker), and die
    with it if it is killed."""
    import signal

    from .files import die_with_parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def _stop(pool) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.kill()
    for p in processes:
        p.join(timeout=5)


def run_ray(runs: Iterable[RunSpec], sweep: Sweep, execution) -> list[tuple[RunSpec, str]]:
    """Every run as a Ray task (``bench.ray_executor``, imported only when asked for)."""
    from .ray_executor import run_ray as ray_sweep
    return ray_sweep(runs, sweep, execution)


EXECUTORS = {"local": run_local, "ray": run_ray}

"""Executors: where planned runs (``RunSpec``) are trained. ``local`` runs them in this process or in a pool
of worker processes; each finished run is handed back as it arrives, so the caller saves it at once.
"""
from __future__ import annotations

from typing import Callable, Iterable

from .config import RunSpec
from .errors import BenchError


def _work(item: tuple[RunSpec, int]) -> dict:
    import torch

    from .runner import run_one
    run, threads = item
    torch.set_num_threads(threads)
    return run_one(run)


def start_method(runs: list[RunSpec]) -> str:
    """How pool workers start: forked when every run is on the CPU (they inherit the stream's features built
    here), spawned otherwise: a process forked after its parent initialised CUDA cannot use CUDA."""
    return "fork" if all(r.device.split(":")[0] == "cpu" for r in runs) else "spawn"


def run_local(runs: Iterable[RunSpec], jobs: int, threads: int, on_start: Callable[[RunSpec], None],
              on_result: Callable[[RunSpec, dict], None]) -> None:
    """Train every run; ``on_result(run, record)`` as each finishes. With ``jobs > 1`` the runs go to worker
    processes (``start_method``); a run that fails with a
    ``BenchError`` does not stop the others, and the first such error is raised once all have finished."""
    runs = list(runs)
    if jobs == 1:
        for run in runs:
            on_start(run)
            on_result(run, _work((run, threads)))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    failed = None
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context(start_method(runs))) as pool:
        futures = {pool.submit(_work, (run, threads)): run for run in runs}
        for fut in as_completed(futures):
            try:
                on_result(futures[fut], fut.result())
            except BenchError as e:
                failed = failed or e
    if failed:
        raise failed

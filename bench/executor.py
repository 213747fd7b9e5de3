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


def run_ray(runs: Iterable[RunSpec], jobs: int, threads: int, on_start: Callable[[RunSpec], None],
            on_result: Callable[[RunSpec, dict], None], address: str | None = None) -> None:
    """Train every run as a Ray task (one CPU each); ``on_result`` as each finishes, in the order they finish.
    ``address``: an existing cluster (``ray start --head`` … or ``auto``); None starts a local one with
    ``jobs`` CPUs. Every node needs this package importable (installed, or shipped in a Ray runtime
    environment). A run failing with a ``BenchError`` does not stop the others; the first is raised at
    the end, as with ``run_local``."""
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install 'cmcl-bench[ray]'") from None
    runs = list(runs)
    if not runs:
        return
    started_here = not ray.is_initialized()
    if started_here:
        kw = dict(address=address) if address else dict(num_cpus=jobs)
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BenchError(f"--executor ray: cannot reach a Ray cluster at {address or 'a new local one'} "
                             f"({str(e).splitlines()[0]})") from None
    remote = ray.remote(num_cpus=1, max_retries=0)(_work)
    pending = {}
    for run in runs:
        on_start(run)
        pending[remote.remote((run, threads))] = run
    failed = None
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                run = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, BenchError):
                        failed = failed or cause
                        continue
                    raise
                on_result(run, record)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
    if failed:
        raise failed

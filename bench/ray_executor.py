"""The Ray executor (``--executor ray``): every run is a Ray task on a cluster, or on a local one.

Faults. A run lost to the system — its worker process crashed or was killed, its node died, its result was
lost with a node — is started again, up to ``max_retries`` times (Ray's own task retries: the retried run is
the same ``RunSpec``, so the same record). An exception raised by the run itself (a diverging run, bad
input) is not retried: it is deterministic and would fail again. A run that still fails is reported to the
sweep like a local failure (``failures.json``, exit 1), every other run goes on, and each record is saved
by the driver as soon as its run finishes.

Resources. A run asks Ray for one CPU and, with ``--device cuda``, ``gpus_per_run`` GPUs (fractional: several
runs share a GPU); Ray sets each task's visible GPU, so the run's device is plain ``cuda``. ``jobs`` bounds
the runs in flight (without it the cluster's resources do). Before any run starts, the cluster is checked:
some node can hold a run, and every node able to hold one reads the stream's feature banks at the driver's
paths with the driver's content (else one line names the node and the file).

Cost. Workers are Ray's own processes, reused from task to task (CPU tasks), so each builds a stream once
(``bench.runner.get_scenario`` caches it by the stream's hash) and imports once.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from .config import RunSpec
from .errors import BenchError
from .executor import RunLost, Sweep, _work, failure

WAIT = 1.0                # seconds the driver waits for a result before looking up again
MAX_RETRIES = 3           # a run lost to a worker's or a node's death is started again this many times


def retries(execution) -> int:
    return MAX_RETRIES if execution.max_retries is None else execution.max_retries


def gpus(execution) -> float:
    """GPUs a run asks for: ``--gpus-per-run``, else 1 with ``--device cuda``, else 0."""
    if execution.gpus_per_run is not None:
        return execution.gpus_per_run
    return 1.0 if execution.device.split(":")[0] == "cuda" else 0.0


def task_options(execution) -> dict:
    """Ray's options for one run's task. A run raising an exception of its own is not retried
    (``retry_exceptions=False``); GPU tasks keep Ray's one-task-per-worker default, since a worker whose CUDA
    was initialised for one task's GPU cannot follow a later task to another GPU."""
    return {"num_cpus": 1, "num_gpus": gpus(execution), "max_retries": retries(execution),
            "retry_exceptions": False}


def remote_work(execution):
    """A run as a Ray task. The options go to ``ray.remote`` itself, not ``.options``: only there does a GPU
    task get Ray's one-task-per-worker default."""
    import ray
    return ray.remote(**task_options(execution))(_work)


def connect(execution) -> bool:
    """Connect to ``execution.address``, or start a local cluster with ``jobs`` CPUs (never joining a cluster
    already running on this machine: ``address="local"``). True when this call started Ray."""
    import ray
    if ray.is_initialized():
        return False
    kw = dict(address=execution.address) if execution.address else dict(address="local", num_cpus=execution.jobs)
    try:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        hint = ("; a cluster started with token authentication also needs RAY_AUTH_MODE=token and its token here "
                "(RAY_AUTH_TOKEN, or the file ~/.ray/auth_token)" if execution.address else "")
        raise BenchError(f"--executor ray: cannot reach a Ray cluster at {execution.address or 'a new local one'} "
                         f"({str(e).splitlines()[0]}){hint}") from None
    return True


def node_name(node: dict) -> str:
    return f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})"


def usable_nodes(execution) -> list[dict]:
    """The live nodes that can hold one run (a CPU and its GPUs); none: one line naming what each node has."""
    import ray
    need = {"CPU": 1.0, "GPU": gpus(execution)}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fit = [n for n in nodes if all(n["Resources"].get(k, 0.0) >= v for k, v in need.items() if v)]
    if not fit:
        have = "; ".join(f"{node_name(n)}: CPU {n['Resources'].get('CPU', 0):g}, GPU {n['Resources'].get('GPU', 0):g}"
                         for n in nodes) or "no live node"
        want = f"1 CPU and {need['GPU']:g} GPU" if need["GPU"] else "1 CPU"
        raise BenchError(f"--executor ray: no node of the cluster has {want} for a run ({have})"
                         + ("; lower --gpus-per-run or add GPU nodes" if need["GPU"] else ""))
    return fit


def bank_problems(files: dict[str, str]) -> list[str]:
    """On one node: what is wrong with the bank files ``{path: the driver's content hash}`` there."""
    from .features.bank import content_sha
    out = []
    for path, sha in files.items():
        if not Path(path).is_file():
            out.append(f"lacks {path}")
            continue
        try:
            here = content_sha(path)
        except BenchError as e:
            out.append(str(e))
            continue
        if here != sha:
            out.append(f"holds another version of {path} (content {here[:12] or 'unknown'}, the driver's "
                       f"{sha[:12] or 'unknown'})")
    return out


def bank_files(runs: list[RunSpec]) -> dict[str, str]:
    """Every bank file the runs read, ``{absolute path: content hash}`` (as the driver reads them)."""
    from .features.bank import present_files
    out: dict[str, str] = {}
    for run in runs:
        if not run.stream.bank_sources:
            continue
        splits = ("train", "test") if run.split == "test" else ("train",)
        for (s, split), path in present_files(run.stream, run.encoder, run.banks, splits).items():
            out[str(Path(path).resolve())] = (run.bank_shas or {}).get(f"{s}/{split}", "")
    return out


def check_banks(runs: list[RunSpec], nodes: list[dict]) -> None:
    """Every node that may hold a run reads the runs' bank files with the driver's content: one short task
    pinned to each node (no CPU asked, so it runs beside busy workers)."""
    files = bank_files(runs)
    if not files:
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    check = ray.remote(bank_problems)
    refs = {node_name(n): check.options(num_cpus=0, max_retries=1, scheduling_strategy=
                                        NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(files)
            for n in nodes}
    problems = [f"node {name} {p}" for name, ref in refs.items() for p in ray.get(ref)]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise BenchError(f"--executor ray: the feature banks are not the same on every node: {'; '.join(problems[:3])}"
                         f"{more}; put the same files at the same paths on every node (a shared disk)")



def lost(error: BaseException, max_retries: int) -> RunLost:
    tries = f"{max_retries + 1} attempts" if max_retries else "1 attempt: --max-retries 0"
    return RunLost(f"lost to a system failure ({tries}): {failure(error)}")


def run_ray(runs: Iterable[RunSpec], sweep: Sweep, execution) -> list[tuple[RunSpec, str]]:
    """Train every run as a Ray task; ``sweep.finished`` as each finishes, in the order they finish. Every
    node needs this package importable (installed, or shipped in a Ray runtime environment). Failed runs are
    reported and returned, as with ``bench.executor.run_local``."""
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install 'cmcl-bench[ray]'") from None
    # a worker's working directory is not the driver's: the banks' folder is passed as the driver sees it
    # (not part of a run's configuration hash, which records the banks' content)
    runs = [replace(r, banks=str(Path(r.banks).resolve())) if r.stream.bank_sources else r for r in runs]
    if not runs:
        return sweep.failures
    started_here = connect(execution)
    pending: dict = {}
    try:
        check_banks(runs, usable_nodes(execution))
        remote = remote_work(execution)
        window = execution.jobs or len(runs)
        todo, threads = list(runs), execution.threads
        while todo or pending:
            while todo and len(pending) < window:
                run = todo.pop(0)
                if sweep.claim(run):                  # claimed as it is submitted: a second runner takes the rest
                    sweep.started(run)
                    pending[remote.remote((run, threads))] = run
            if not pending:
                continue
            # a bounded wait: the loop comes back to Python at least every WAIT seconds (Ctrl-C is seen there)
            done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT)
            for ref in done:
                run = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayTaskError as e:          # raised by the run itself
                    sweep.failed(run, getattr(e, "cause", None) or e)
                except ray.exceptions.RayError as e:              # the system: retries used up
                    sweep.failed(run, lost(e, retries(execution)))
                else:
                    sweep.finished(run, record)
    finally:
        if started_here:                # its whole cluster goes, runs in flight with it
            ray.shutdown()
        else:                           # a cluster that stays: its runs in flight are interrupted
            for ref in pending:
                ray.cancel(ref)
    return sweep.failures

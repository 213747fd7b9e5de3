"""``bench.tune --executor ray``: the tuning runs as Ray Tune trials.

What Tune does here: it schedules the trials on the cluster (one CPU, and ``--gpus-per-run`` GPUs, each),
retries a failed trial (``--max-retries``, Tune's ``max_failures``; a retried trial skips its finished
runs), keeps the experiment's state so that an interrupted tuning resumes (``Tuner.restore``), and with
``--scheduler asha`` stops candidates that fall behind early (asynchronous successive halving).

What stays ours, so that both executors tune alike: the candidate settings (``bench.tune.candidates``: the
default first, a seeded sample when the grid exceeds the budget — handed to Tune as a grid over them), the
validation split, tuning's own seeds and worlds, the runs themselves (ordinary run files under
``<out>/<stream>/tuning/``, each written as it finishes), the criterion, the choice (``bench.tune.select``:
paired difference against the default, one standard error), grid extension and the provenance file. With
``--scheduler none`` every candidate runs to its end and the choice is the local tuner's.

One Tune experiment per method and round (ASHA must not rank one method's candidates against another's),
``<out>/<stream>/tuning/ray-tune/<method>-round<r>``. A trial is one candidate: its runs (seeds × orders ×
worlds) one after another, reporting after every step of every run the candidate's validation value
(``value``) at ``steps`` (steps trained so far over its runs): the criterion's mean over its finished
runs, and during its first run that run's running score (the tasks learned so far). ASHA's rungs are
multiples of one run's steps (``grace_period`` = the steps of one run, ``reduction_factor`` 2), so it
decides on finished runs only, each candidate having run the same seeds in the same order. The default is
never stopped: it is what a candidate must beat. A candidate stopped early has no choice to offer; the
provenance lists it under ``stopped_early`` with the runs it finished and its value then.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from .errors import BenchError
from .ray_executor import check_banks, connect, gpus, retries, usable_nodes

SCHEDULERS = ("none", "asha")
REDUCTION_FACTOR = 2


def _finished(run, out: Path):
    """The run's record when its file holds this configuration's finished run, else None."""
    from .reporting.records import read_run
    path = run.path(out)
    if not path.exists():
        return None
    try:
        rec = read_run(path)
    except BenchError:
        return None
    return rec if rec["config_hash"] == run.hash else None


def trial(config: dict, runs: dict, out: str, criterion, threads: int) -> None:
    """One candidate's runs, in order; ``tune.report`` after every step (see the module's docstring)."""
    import torch
    from ray import tune

    from .reporting.records import write_run
    from .runner import train_run
    from .tune import declared_score
    torch.set_num_threads(threads)
    mine, done = runs[config["row"]], list[float]()
    steps = 0

    def report(at: int, row: dict, metrics: list) -> None:
        """A step inside a run (its last one is reported below, with the criterion's value)."""
        tune.report({"steps": at, "value": sum(done) / len(done) if done else declared_score(row, metrics)})
    for run in mine:
        rec = _finished(run, Path(out))
        if rec is None:
            def on_row(k, row, tasks, base=steps):
                if k < len(tasks):
                    report(base + k, row, [t.metrics for t in tasks[:k]])
            rec = train_run(run, on_row=on_row)[0]
            write_run(run.path(Path(out)), rec)
        else:                           # finished before (a retried or resumed trial): its steps again
            for k in range(1, len(rec["tasks"])):
                report(steps + k, {key: m[k] for key, m in rec["matrices"].items()},
                       [t["metrics"] for t in rec["tasks"][:k]])
        steps += len(rec["tasks"])
        v = criterion(rec)
        if v is not None:
            done.append(v)
        tune.report({"steps": steps, "value": sum(done) / len(done) if done else float("nan")})


def _scheduler(name: str, default_row: str, steps_per_run: int, runs_per_candidate: int, mode: str):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
    if name == "none":
        return FIFOScheduler()

    class KeepDefault(ASHAScheduler):
        """ASHA that ranks the default with the others but never stops it."""

        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            return TrialScheduler.CONTINUE if trial.config.get("row") == default_row else decision

    return KeepDefault(time_attr="steps", metric="value", mode=mode, grace_period=steps_per_run,
                       max_t=steps_per_run * runs_per_candidate, reduction_factor=REDUCTION_FACTOR)


def run_trials(p, request, scheduler: str, criterion, direction: str, rnd: int,
               skip: Collection[str] = ()) -> tuple[list, dict]:
    """Every candidate of the plan ``p`` as a Tune trial, but those in ``skip`` (stopped in an earlier
    round). Returns ``(failures, stopped)``: failures as
    ``bench.executor`` lists them (run, message), and per method the candidates stopped early
    (``{label, steps, of, value}``)."""
    import os
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")        # Tune's tables would bury bench.tune's own lines
    # Ctrl-C stays an interrupt (nothing written, a rerun resumes): Tune's own handler would end the experiment
    # "gracefully", and its unfinished trials would read as candidates stopped early
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        import ray
        from ray import tune
    except ImportError:
        raise BenchError("bench.tune --executor ray needs Ray Tune: pip install 'cmcl-bench[ray]'") from None
    out = Path(request.out).resolve()
    runs = [replace(r, banks=str(Path(r.banks).resolve())) if r.stream.bank_sources else r for r in p.runs]
    by_method: dict[str, dict[str, list]] = {}
    for r in runs:
        if r.row not in skip:
            by_method.setdefault(r.method, {}).setdefault(r.row, []).append(r)
    execution = request.execution
    started_here = connect(execution)
    failures: list = []
    stopped: dict[str, list] = {}
    try:
        check_banks(runs, usable_nodes(execution))
        for method, rows in by_method.items():
            labels = list(rows)                 # the plan's order: the default first
            n_runs, steps = len(rows[labels[0]]), len(p.stream.steps)
            trainable = tune.with_resources(
                tune.with_parameters(trial, runs=rows, out=str(out), criterion=criterion, threads=execution.threads),
                {"cpu": 1, "gpu": gpus(execution)})
            where = p.stream_dir.resolve() / "ray-tune"
            name = f"{method}-round{rnd}"
            if tune.Tuner.can_restore(str(where / name)):
                tuner = tune.Tuner.restore(str(where / name), trainable, resume_errored=True)
            else:
                tuner = tune.Tuner(
                    trainable, param_space={"row": tune.grid_search(labels)},
                    tune_config=tune.TuneConfig(scheduler=_scheduler(scheduler, labels[0], steps, n_runs,
                                                                     "max" if direction == "higher" else "min"),
                                                max_concurrent_trials=execution.jobs, reuse_actors=True),
                    run_config=tune.RunConfig(name=name, storage_path=str(where), verbose=0,
                                              failure_config=tune.FailureConfig(max_failures=retries(execution))))
            results = tuner.fit()
            for result in (results[i] for i in range(len(results))):
                label = (result.config or {})["row"]
                if result.error is not None:
                    failures.append((rows[label][0], _one_line(result.error)))
                    continue
                reached = int((result.metrics or {}).get("steps", 0))
                if reached < steps * n_runs and scheduler == "none":
                    failures.append((rows[label][0], f"its trial ended after {reached} of {steps * n_runs} steps"))
                elif reached < steps * n_runs:
                    stopped.setdefault(method, []).append({
                        "label": label, "runs_finished": reached // steps, "of": n_runs,
                        "value": (result.metrics or {}).get("value")})
    finally:
        if started_here:
            ray.shutdown()
    return failures, stopped


def _one_line(error: BaseException) -> str:
    from .executor import failure
    cause = getattr(error, "cause", None)
    return failure(cause if isinstance(cause, BaseException) else error)

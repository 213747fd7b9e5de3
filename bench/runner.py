"""One run = one ``RunSpec`` (stream × method × seed, with every setting): build, train step by step,
evaluate, return the run record.

The runner owns seeds, device and threads; methods never read the CLI.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from . import registry
from .config import RunSpec, stream_hash
from .devices import host, is_data_free, peak_memory, reset_peak_memory
from .errors import BenchError
from .evaluate import Evaluator
from .heads import Heads
from .reporting.records import RunRecord, TaskEntry, build_record
from .scenario import Scenario, as_run, build
from .simulate import simulate
from .streams import StreamSpec
from .trainer import Trainer

_SCENARIOS: dict[tuple, Scenario] = {}


def get_scenario(spec: StreamSpec, encoder: str | None = None, banks: str | Path = "features",
                 split: str = "test", world: int = 0) -> Scenario:
    """Built once per process, stream file content, encoder, evaluation split and world (the features are the
    same for every run). ``split = "validation"`` reads no test data at all."""
    key = (str(spec.path), stream_hash(spec), encoder if spec.bank_sources else None, str(banks), split, world)
    if key not in _SCENARIOS:
        from .features.bank import load_stream_banks
        from .scenario import world_spec
        disk, shas = load_stream_banks(spec, encoder, banks, ("train", "test") if split == "test" else ("train",))
        scenario = build(spec, {**simulate(world_spec(spec, world)), **disk}, split, world)
        scenario.bank_shas = shas
        _SCENARIOS[key] = scenario
    return _SCENARIOS[key]


def run_scenario(run: RunSpec) -> tuple[RunSpec, Scenario]:
    """What a run trains and evaluates: its scenario as the benchmark says (``bench.scenario.as_run``: the
    experiences' own steps, order and pairs), and the spec with the banks' hashes and, for a changed
    benchmark, its description — both part of the configuration, so a run on a changed benchmark never
    shares a hash with the stream file's."""
    from dataclasses import replace

    from .scenario import in_order
    scenario = as_run(get_scenario(run.stream, run.encoder, run.banks, run.split, run.world))
    return replace(run, bank_shas=scenario.bank_shas, benchmark=scenario.changed), in_order(scenario, run.order)


def versions() -> dict:
    import numpy

    from .provenance import code_version
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "platform": platform.platform(), "code": code_version()}
    try:
        from importlib.metadata import version
        out["avalanche-lib"] = version("avalanche-lib")
        out["cmcl-bench"] = version("cmcl-bench")
    except Exception:  # pragma: no cover - not installed as a distribution
        pass
    return out


def evaluated_rows(scenario) -> list:
    """Per step and probe, the test rows its experience in the benchmark's test (probe) stream holds."""
    from .scenario import experience_rows
    bm = scenario.benchmark
    streams = [(bm.test_stream, scenario.tasks)] + ([(bm.probe_stream, scenario.probes)] if scenario.probes else [])
    return [experience_rows(exp.dataset, len(t.test_source)) for stream, ts in streams for exp, t in zip(stream, ts)]


def loss_warnings(timings: list[dict], tasks) -> list[str]:
    """One line per step whose training loss rose far above where it started (``trainer.loss_record``)."""
    return [f"step {t['step'] + 1} ({tasks[t['step']].name}): training loss started at {t['loss_start']:.3g}, "
            f"peaked at {t['loss_peak']:.3g} and ended at {t['loss_end']:.3g}: unstable training (lower --lr?)"
            for t in timings if t.get("loss_rose")]


def make_heads(run: RunSpec, scenario: Scenario) -> Heads:
    """A run's heads at the start (seeded by the run), on its device."""
    return Heads(scenario.in_dims, out_dim=scenario.head_dim, seed=run.seed).to(run.device)


def make_evaluator(run: RunSpec, scenario: Scenario) -> Evaluator:
    """A run's evaluator: its seed's test subsets of the test pairs the benchmark's experiences hold."""
    ev = run.eval
    return Evaluator(scenario.tasks, run.seed, ev.n_pairs, ev.repeats, ev.align_pairs, probes=scenario.probes,
                     rows=evaluated_rows(scenario), world=run.world)


def run_one(run: RunSpec, progress=None) -> RunRecord:
    """Train and evaluate one run; return its record (see ``bench.reporting.records``)."""
    return train_run(run, progress)[0]


def save_heads(heads: Heads, path: Path) -> None:
    """The heads' parameters (``{modality: {"weight", "bias"}}``, on the CPU), written atomically."""
    from .files import atomic_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({m: {k: v.detach().cpu() for k, v in lin.state_dict().items()} for m, lin in heads.linears.items()},
                   tmp)


def divergence_cause(step: dict) -> str:
    """What a diverged step's loss record shows, and what to change: the InfoNCE overflowed (the learning
    rate), only the method's own loss terms did (its strength), or the loss stayed finite (an update outside
    it: a projection, a merge, the optimiser's step)."""
    at = step.get("nonfinite_at")
    if at is None:
        return (f"the loss stayed finite ({step['loss'][-1]:.3g} in the last epoch): an update outside it made "
                "the weights so (the method's own step; see its options)")
    before = at["last_finite_loss"]
    where = f"at iteration {at['iteration']}" + (f" (just before: {before:.3g})" if before is not None else "")
    if at["infonce"] is not None:
        return (f"the method's own loss terms overflowed {where} while the InfoNCE was {at['infonce']:.3g}: "
                "lower the method's strength option")
    return f"the InfoNCE overflowed {where}: lower --lr"


def train_run(run: RunSpec, progress=None, on_row=None) -> tuple[RunRecord, Heads]:
    """Train and evaluate one run; return its record and the trained heads. With ``run.heads_dir`` the heads
    are also saved after every step, as ``<heads_dir>/step<k>.pt`` (k = 1..T); with ``run.log`` the loss per
    epoch and the evaluations go to those loggers (``bench.tracking``). ``on_row(k, row, tasks)``: called
    after step k's evaluation (k = 1..T; ``row`` as the record's matrices hold it, ``tasks`` the run's tasks
    in its order) — how ``bench.tune`` reports a score after each step to Ray Tune."""
    torch.manual_seed(run.seed)
    reset_peak_memory(run.device)
    run, scenario = run_scenario(run)
    method_cls = registry.get(run.method)
    m = method_cls(**run.options)
    heads = make_heads(run, scenario)
    trainer = Trainer(scenario, m, heads, run.train, run.loss, run.seed, run.device)
    evaluator = make_evaluator(run, scenario)
    t_start = time.perf_counter()
    rows = [evaluator.evaluate(heads, learned=0)]
    timings = []
    log = None
    if run.log:
        from .tracking import RunLog
        log = RunLog(run.log, Path(run.log_dir or "."), f"{run.result_name}/{run.row}/{run.run_name}", run.config())
    within: dict | None = None if run.eval_every is None else {"every": run.eval_every, "seconds": 0.0, "steps": []}
    try:
        for step in range(len(scenario.tasks)):
            if within is None or step == 0:
                timings.append(trainer.train_experience(step))
            else:
                curve = within_curve(rows[-1], step)
                old = list(range(step))
                timings.append(trainer.train_experience(step, run.eval_every, lambda i, c=curve, o=old: probe_into(
                    c, i, evaluator.within_step(heads, o))))
            if not is_data_free(run.device) and not host(torch.stack([p.isfinite().all() for p in heads.parameters()])).all():
                bad = [m for m, lin in heads.linears.items()
                       if not host(torch.stack([p.isfinite().all() for p in lin.parameters()])).all()]
                raise BenchError(f"training diverged in step {step + 1} ({scenario.tasks[step].name}): non-finite "
                                 f"weights in the {', '.join(bad)} head; {divergence_cause(timings[-1])}")
            rows.append(evaluator.evaluate(heads, learned=step + 1))
            if within is not None and step > 0:
                n = timings[-1]["iterations"]
                if n:               # the step's end as its row has it (after the method's end-of-step hook)
                    if curve["iterations"][-1] == n:
                        for k in ("iterations", "r10", "align_dev"):
                            curve[k].pop()
                    probe_into(curve, n, {k: rows[-1][k][:step] for k in ("r10", "align_dev")})
                within["steps"].append(curve)
                within["seconds"] += timings[-1]["within_seconds"]
            if log is not None:
                log.step_trained(timings[-1])
                log.evaluated(rows[-1], step + 1)
            if run.heads_dir is not None and not is_data_free(run.device):
                save_heads(heads, Path(run.heads_dir) / f"step{step + 1}.pt")
            if on_row is not None:
                on_row(step + 1, rows[-1], scenario.tasks)
            if progress is not None:
                progress(step + 1, len(scenario.tasks))
    finally:
        if log is not None:
            log.close()
    def entry(t) -> TaskEntry:
        return {"name": t.name, "source": t.step.source, "modalities": list(t.pair), "metrics": list(t.metrics)}

    banks = None
    if run.stream.bank_sources:      # which banks, made how: their hashes are in the configuration already
        from .features.bank import banks_provenance
        banks = banks_provenance(run.stream, run.encoder, run.banks,
                                 ("train", "test") if run.split == "test" else ("train",))
    from .budget import trainable_params
    budget = {"state_bytes": trainer.state_peak, "trainable_params": trainable_params(heads)}
    record = build_record(run, [entry(t) for t in scenario.tasks], [entry(p) for p in scenario.probes], rows,
                          timings, time.perf_counter() - t_start, peak_memory(run.device), method_cls,
                          m.state_summary(), versions(), loss_warnings(timings, scenario.tasks), banks, budget,
                          within)
    return record, heads


def within_curve(before: dict, step: int) -> dict:
    """A step's within-step curve (``--eval-every``), starting at iteration 0 with the previous row's values
    of its old tasks (the steps ``0 .. step − 1`` of the run's order)."""
    return {"step": step, "iterations": [0], "r10": [before["r10"][:step]],
            "align_dev": [before["align_dev"][:step]]}


def probe_into(curve: dict, iteration: int, values: dict) -> None:
    curve["iterations"].append(iteration)
    for k in ("r10", "align_dev"):
        curve[k].append(values[k])

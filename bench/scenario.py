"""Turns a stream spec into an Avalanche benchmark: one experience per step, train and test streams.

Each experience's dataset is a ``bench.pair_data.PairDataset`` (an ``AvalancheDataset`` over the step's two
feature matrices), whose items end with the task label (the step) and which carries each item's ``rows``; the pair
metadata (``Task``) sits beside it, aligned by experience index, and on the experience as attributes.
Avalanche is imported here only, when a stream is built: it costs seconds and ``--help`` must not pay it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from . import seeds
from .errors import BenchError
from .features.bank import SplitFeatures
from .streams import Step, StreamSpec


def pair_dataset(xa: torch.Tensor, xb: torch.Tensor, step: int, split: str):
    """An experience's dataset (``bench.pair_data.pair_dataset``)."""
    from .pair_data import pair_dataset as make
    return make(xa, xb, step, split)


def experience_rows(dataset, n: int) -> torch.Tensor | None:
    """The rows of the step's matrices an experience's dataset holds (``None``: all ``n``, in order)."""
    rows = getattr(dataset, "rows", None)
    if rows is None:
        raise BenchError("an experience's dataset has no 'rows' attribute: build benchmarks from the "
                         "experiences' own datasets (subset, concat), which carry it")
    rows = torch.as_tensor(list(rows), dtype=torch.long)
    return None if len(rows) == n and bool((rows == torch.arange(n)).all()) else rows


@dataclass
class Task:
    """One step: its pair, its metrics, and the source's splits (all modalities, for methods that need
    them, e.g. ``dns-official``'s column mix-up)."""

    step: Step
    train_source: SplitFeatures
    test_source: SplitFeatures

    @property
    def index(self) -> int:
        return self.step.index

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def pair(self) -> tuple[str, str]:
        return self.step.pair

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.step.metrics

    @property
    def text_side(self) -> int | None:
        """0 or 1 if the pair has a text modality (the class-text side for zero-shot Acc)."""
        return self.pair.index("text") if "text" in self.pair else None


def pair_tensors(dataset, task: Task, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The (x_a, x_b) matrices of an experience's dataset: the step's matrices, indexed by the rows the
    dataset holds (the whole matrices, uncopied, when it holds them all)."""
    f = (task.train_source if split == "train" else task.test_source).features
    xa, xb = f[task.pair[0]], f[task.pair[1]]
    rows = experience_rows(dataset, len(xa))
    return (xa, xb) if rows is None else (xa[rows], xb[rows])


@dataclass
class Scenario:
    spec: StreamSpec
    tasks: list[Task]
    benchmark: Any          # avalanche CLScenario: train_stream, test_stream and probe_stream
    probes: list[Task] = field(default_factory=list)   # evaluation-only pairs (emergent alignment)
    bank_shas: dict | None = None   # content hash of every feature-bank file read (config hash input)
    changed: dict | None = None     # ``as_run``: how the benchmark differs from the stream file's (None: it does not)

    @property
    def in_dims(self) -> dict[str, int]:
        dims = {}
        for t in self.tasks + self.probes:
            for m in t.pair:
                dims[m] = t.test_source.features[m].shape[1]
        return dims

    @property
    def head_dim(self) -> int:
        return self.spec.head_dim or max(self.in_dims.values())


VALIDATION_FRACTION = 0.1
SPLITS = ("test", "validation")


def _rows(split: SplitFeatures, idx: torch.Tensor) -> SplitFeatures:
    ids = [split.ids[i] for i in idx.tolist()]
    return SplitFeatures(features={m: x[idx] for m, x in split.features.items()}, ids=ids,
                         labels=None if split.labels is None else split.labels[idx],
                         class_texts=split.class_texts, class_names=split.class_names)


def validation_split(spec: StreamSpec, sources: dict[str, dict[str, SplitFeatures]], world: int = 0) -> dict:
    """Each source's training pairs cut into ``train`` (the rest) and ``test`` (the validation pairs): a fixed
    fraction, ``VALIDATION_FRACTION``, drawn once per source from ``bench.seeds`` (purpose ``validation``,
    the world and the source's position in the stream file), so every step of a source — and every method,
    setting and run seed — sees the same validation pairs and never trains on them. The test split is not
    used."""
    out = {}
    for k, name in enumerate(spec.sources):
        if name not in sources:
            continue
        train = sources[name]["train"]
        n = len(train)
        n_val = max(2, round(VALIDATION_FRACTION * n))
        if n - n_val < 2:
            raise BenchError(f"stream {spec.name!r}: source {name!r} has {n} training pairs, too few to hold out "
                             f"{n_val} for validation")
        perm = torch.randperm(n, generator=seeds.generator(world, "validation", k))
        out[name] = {"train": _rows(train, perm[n_val:].sort().values),
                     "test": _rows(train, perm[:n_val].sort().values)}
    return out


def build(spec: StreamSpec, sources: dict[str, dict[str, SplitFeatures]], split: str = "test",
          world: int = 0) -> Scenario:
    """``split = "test"``: train on each step's training pairs, evaluate on its test pairs (and the probes);
    ``"validation"``: train on the training pairs minus the held-out validation pairs and evaluate on those
    (no probes: they are test pairs). Every experience carries its step's meaning as attributes — ``step``
    (its index, also its task label), ``pair``, ``source``, ``name``, ``metrics`` — for Avalanche users."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

    if split == "validation":
        sources = validation_split(spec, sources, world)
    tasks: list = []
    train: list = []
    test: list = []
    for step in spec.steps:
        splits = sources[step.source]
        a, b = step.pair
        tasks.append(Task(step, splits["train"], splits["test"]))
        for part, out in (("train", train), ("test", test)):
            f = splits[part].features
            out.append(pair_dataset(f[a], f[b], step.index, part))
    probes, probe = [], []
    for k, step in enumerate(spec.probes if split == "test" else []):
        splits = sources[step.source]
        probes.append(Task(step, splits["train"], splits["test"]))
        f = splits["test"].features
        probe.append(pair_dataset(f[step.pair[0]], f[step.pair[1]], len(spec.steps) + k, "test"))
    streams = dict(train=train, test=test, **({"probe": probe} if probe else {}))
    scenario = Scenario(spec, tasks, None, probes)
    scenario.benchmark = annotate(benchmark_from_datasets(**streams), scenario)
    return scenario


def annotate(benchmark, scenario: Scenario):
    """``benchmark`` with Avalanche's task-aware attributes (``task_label``, ``task_labels``) and the step's
    meaning on every experience of every stream: ``step`` (its index, also its task label), ``pair``,
    ``source``, ``name``, ``metrics``. Avalanche's utilities (``benchmark_with_validation_stream``,
    ``split_online_stream``, a benchmark rebuilt from subsets) keep the items' task labels but make new
    experiences without these attributes: ``annotate(new, scenario)`` puts them back. (The runner and the
    bridge need none of them: they read each experience's step from its pairs' task labels.)"""
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    benchmark = with_task_labels(benchmark)
    tasks = scenario.tasks + scenario.probes
    for stream in benchmark.streams.values():
        for exp in stream:
            label = experience_step(exp, f"{stream.name}_stream experience", len(tasks))
            t = tasks[label]
            exp.step, exp.pair, exp.source, exp.name, exp.metrics = label, t.pair, t.step.source, t.name, t.metrics
    return benchmark


def experience_step(exp, where: str, n_labels: int | None = None) -> int:
    """The step (task label) an experience holds, read from its pairs' task labels — what Avalanche's
    utilities carry over — and checked: exactly one, within ``0 .. n_labels - 1``, and equal to the
    experience's ``step`` attribute where it has one."""
    labels = getattr(exp.dataset, "targets_task_labels", None)
    if labels is None:
        raise BenchError(f"{where} has no task labels: build experiences from the stream's own experience "
                         "datasets (subset, concat), which carry them")
    uniq = sorted(int(t) for t in labels.uniques)
    if len(uniq) != 1:
        raise BenchError(f"{where} holds the pairs of task labels {uniq}: an experience must hold the pairs of "
                         "one step")
    label = uniq[0]
    if n_labels is not None and not 0 <= label < n_labels:
        raise BenchError(f"{where} holds task label {label}: not a step or probe of this stream (0..{n_labels - 1})")
    step = getattr(exp, "step", None)
    if step is not None and step != label:
        raise BenchError(f"{where} says it is step index {step} but its pairs carry task label {label}")
    return label


def experience_split(dataset, default: str) -> str:
    """Which of its source's splits an experience's rows index (``train`` or ``test``): the dataset's
    ``split`` attribute, else ``default``."""
    split = getattr(dataset, "split", None)
    if split is None:
        return default
    uniq = sorted(split.uniques)
    if len(uniq) != 1:
        raise BenchError(f"an experience holds pairs of the {' and '.join(uniq)} splits: one split an experience")
    return uniq[0]


@dataclass
class Streams:
    """A benchmark's experiences aligned with a run's tasks: position k of each list is the k-th step the run
    trains (``as_run``)."""

    train_stream: list
    test_stream: list
    probe_stream: list


def _digest(dataset, task: Task, split: str) -> str:
    """One experience's pairs in a line for a run's configuration: split, count and a hash of the rows."""
    import hashlib
    n = len(_source(task, split))
    rows = experience_rows(dataset, n)
    rows = torch.arange(n) if rows is None else rows
    return f"{split}:{len(rows)}:{hashlib.sha256(rows.numpy().tobytes()).hexdigest()[:12]}"


def as_run(scenario: Scenario) -> Scenario:
    """The scenario as its benchmark says a run should go: the steps in the order of the train stream's
    experiences, each trained on the pairs its experience holds and evaluated on those its test-stream (and
    probe-stream) experience holds, wherever they sit in those streams. Each experience's step is its pairs'
    task label, so a reordered, shortened or subsetted benchmark (Avalanche's utilities) trains and evaluates
    what it says. Refused with one line: an experience of several steps, a step in two experiences (a
    stream cut into smaller experiences), a trained step with no test experience, a tested step never
    trained. ``changed`` describes the difference from the stream file's benchmark (order, and per
    experience its split, count and rows' hash; part of the run's configuration) or is None."""
    from dataclasses import replace
    bm, n_steps, n_probes = scenario.benchmark, len(scenario.tasks), len(scenario.probes)
    everything = scenario.tasks + scenario.probes

    def steps(name: str, lo: int, hi: int) -> dict[int, object]:
        out: dict[int, object] = {}
        where: dict[int, int] = {}
        for k, exp in enumerate(getattr(bm, name, None) or []):
            s = experience_step(exp, f"{name}[{k}]", n_steps + n_probes)
            what = "steps" if lo == 0 else "probes"
            if not lo <= s < hi:
                raise BenchError(f"{name}[{k}] holds task label {s} ({everything[s].name}), which is not one of the "
                                 f"stream's {what} ({lo}..{hi - 1}); probes are evaluated, never trained")
            if s in out:
                raise BenchError(f"{name}[{where[s]}] and {name}[{k}] both hold step {s + 1} ({everything[s].name}): "
                                 "the suite takes each step as one experience (a stream cut into smaller "
                                 "experiences, e.g. by split_online_stream, is not supported)")
            out[s], where[s] = exp, k
        return out

    train = steps("train_stream", 0, n_steps)
    if not train:
        raise BenchError("the benchmark's train stream has no experiences")
    test = steps("test_stream", 0, n_steps)
    probe = steps("probe_stream", n_steps, n_steps + n_probes) if n_probes else {}
    order = list(train)
    missing = [s for s in order if s not in test]
    if missing:
        raise BenchError(f"the benchmark's test stream has no experience of step {missing[0] + 1} "
                         f"({everything[missing[0]].name}), which its train stream trains")
    untrained = [s for s in test if s not in train]
    if untrained:
        raise BenchError(f"the benchmark's test stream holds step {untrained[0] + 1} ({everything[untrained[0]].name}), "
                         "which its train stream never trains: drop it from the test stream too")

    def task(s: int, train_exp, test_exp) -> Task:
        t = everything[s]
        splits = {"train": t.train_source, "test": t.test_source}
        a = splits[experience_split(train_exp.dataset, "train")] if train_exp is not None else t.train_source
        b = splits[experience_split(test_exp.dataset, "test")]
        return t if a is t.train_source and b is t.test_source else replace(t, train_source=a, test_source=b)

    tasks = [task(s, train[s], test[s]) for s in order]
    probes = [task(s, None, probe[s]) for s in sorted(probe)]
    held: list[tuple[str, list[Any], list[Task]]] = [
            ("train", [train[s] for s in order], [everything[s] for s in order]),
            ("test", [test[s] for s in order], [everything[s] for s in order]),
            ("probe", [probe[s] for s in sorted(probe)], [everything[s] for s in sorted(probe)])]
    same = order == list(range(n_steps)) and sorted(probe) == list(range(n_steps, n_steps + n_probes)) and all(
        experience_split(e.dataset, _natural(part)) == _natural(part) and
        experience_rows(e.dataset, len(_source(t, part))) is None for part, exps, ts in held for e, t in zip(exps, ts))
    changed = None if same else {
        "order": order, **({"probes": sorted(probe)} if n_probes else {}),
        **{part: [_digest(e.dataset, t, experience_split(e.dataset, _natural(part))) for e, t in zip(exps, ts)]
           for part, exps, ts in held if exps}}
    return Scenario(scenario.spec, tasks, Streams(*(exps for _, exps, _ in held)), probes, scenario.bank_shas, changed)


def order_permutation(n_steps: int, order: int) -> list[int]:
    """The steps' positions in task order ``order``: 0 the stream file's; k > 0 a seeded permutation, distinct
    from the file's and from orders 1..k−1 (order k is the same whatever the sweep's number of orders)."""
    seen = [list(range(n_steps))]
    for k in range(1, order + 1):
        salt = 0
        while True:
            perm = torch.randperm(n_steps, generator=seeds.generator(0, "order", k, salt)).tolist()
            if perm not in seen:
                break
            salt += 1
        seen.append(perm)
    return seen[order]


def in_order(scenario: Scenario, order: int) -> Scenario:
    """``scenario`` (as ``as_run`` made it) with its steps trained in task order ``order``. Each task keeps its
    name, step index and test pairs (the evaluation draws follow the step index, not the position), so a run
    in another order is the same stream learned in another sequence; its matrices' columns follow the order
    trained (the run file's ``tasks`` names them)."""
    if order == 0:
        return scenario
    from dataclasses import replace
    perm = order_permutation(len(scenario.tasks), order)
    bm = scenario.benchmark
    streams = Streams([bm.train_stream[i] for i in perm], [bm.test_stream[i] for i in perm],
                      list(getattr(bm, "probe_stream", None) or []))
    return replace(scenario, tasks=[scenario.tasks[i] for i in perm], benchmark=streams)


def world_spec(spec: StreamSpec, world: int) -> StreamSpec:
    """The stream of world ``world``: 0 the file's; k > 0 the same stream simulated from another seed (its
    simulated sources' features, and so their test and validation pairs, are new; bank sources are the same
    files, redrawn by the evaluation's and the validation split's seeds)."""
    if world == 0:
        return spec
    from dataclasses import replace

    from .streams import SIM_DEFAULTS
    base = int({**SIM_DEFAULTS, **spec.simulation}["seed"])
    return replace(spec, simulation={**spec.simulation, "seed": seeds.derive(base, "world", world)})


def _natural(part: str) -> str:
    return "train" if part == "train" else "test"


def _source(t: Task, split: str) -> SplitFeatures:
    return t.train_source if split == "train" else t.test_source

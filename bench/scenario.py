"""Turns a stream spec into an Avalanche benchmark: one experience per step, train and test streams.

Each experience's dataset is a ``bench.pair_data.PairDataset`` (an ``AvalancheDataset`` over the step's two
feature matrices), whose items end with the task label (the step) and which carries each item's ``rows``; the pair
metadata (``Task``) sits beside it, aligned by experience index, and on the experience as attributes.
Avalanche is imported here only, when a stream is built: it costs seconds and ``--help`` must not pay it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import seeds
from .features.bank import SplitFeatures
from .streams import Step, StreamSpec


def pair_dataset(xa: torch.Tensor, xb: torch.Tensor, step: int):
    """An experience's dataset (``bench.pair_data.pair_dataset``)."""
    from .pair_data import pair_dataset as make
    return make(xa, xb, step)


def experience_rows(dataset, n: int) -> torch.Tensor | None:
    """The rows of the step's matrices an experience's dataset holds (``None``: all ``n``, in order)."""
    rows = getattr(dataset, "rows", None)
    if rows is None:
        from .errors import BenchError
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


def pair_tensors(dataset, task: "Task", split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
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
    benchmark: object       # avalanche CLScenario: train_stream, test_stream and probe_stream
    probes: list[Task] = field(default_factory=list)   # evaluation-only pairs (emergent alignment)
    bank_shas: dict | None = None   # content hash of every feature-bank file read (config hash input)

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


def validation_split(spec: StreamSpec, sources: dict[str, dict[str, SplitFeatures]]) -> dict:
    """Each source's training pairs cut into ``train`` (the rest) and ``test`` (the validation pairs): a fixed
    fraction, ``VALIDATION_FRACTION``, drawn once per source from ``bench.seeds`` (purpose ``validation``,
    the source's position in the stream file), so every step of a source — and every method, setting and
    run seed — sees the same validation pairs and never trains on them. The test split is not used."""
    out = {}
    for k, name in enumerate(spec.sources):
        if name not in sources:
            continue
        train = sources[name]["train"]
        n = len(train)
        n_val = max(2, round(VALIDATION_FRACTION * n))
        if n - n_val < 2:
            from .errors import BenchError
            raise BenchError(f"stream {spec.name!r}: source {name!r} has {n} training pairs, too few to hold out "
                             f"{n_val} for validation")
        perm = torch.randperm(n, generator=seeds.generator(0, "validation", k))
        out[name] = {"train": _rows(train, perm[n_val:].sort().values),
                     "test": _rows(train, perm[:n_val].sort().values)}
    return out


def build(spec: StreamSpec, sources: dict[str, dict[str, SplitFeatures]], split: str = "test") -> Scenario:
    """``split = "test"``: train on each step's training pairs, evaluate on its test pairs (and the probes);
    ``"validation"``: train on the training pairs minus the held-out validation pairs and evaluate on those
    (no probes: they are test pairs). Every experience carries its step's meaning as attributes — ``step``
    (its index, also its task label), ``pair``, ``source``, ``name``, ``metrics`` — for Avalanche users."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels

    if split == "validation":
        sources = validation_split(spec, sources)
    tasks, train, test = [], [], []
    for step in spec.steps:
        splits = sources[step.source]
        a, b = step.pair
        tasks.append(Task(step, splits["train"], splits["test"]))
        for part, out in (("train", train), ("test", test)):
            f = splits[part].features
            out.append(pair_dataset(f[a], f[b], step.index))
    probes, probe = [], []
    for k, step in enumerate(spec.probes if split == "test" else []):
        splits = sources[step.source]
        probes.append(Task(step, splits["train"], splits["test"]))
        f = splits["test"].features
        probe.append(pair_dataset(f[step.pair[0]], f[step.pair[1]], len(spec.steps) + k))
    streams = dict(train=train, test=test, **({"probe": probe} if probe else {}))
    benchmark = with_task_labels(benchmark_from_datasets(**streams))
    for name, ts in (("train_stream", tasks), ("test_stream", tasks), ("probe_stream", probes)):
        for exp, t in zip(getattr(benchmark, name, []) if ts else [], ts):
            exp.step, exp.pair, exp.source, exp.name, exp.metrics = t.index, t.pair, t.step.source, t.name, t.metrics
    return Scenario(spec, tasks, benchmark, probes)

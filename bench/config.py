"""The settings of one run, as typed frozen objects: training, loss, evaluation, and the ``RunSpec`` that
holds them with the stream, the method and its options, the seed, the device and the feature banks.

A ``RunSpec`` is what the CLI plans, what an executor hands to a worker (it pickles) and what a run record
stores as its ``config``; its ``hash`` decides whether a finished run can be skipped. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BenchError

if TYPE_CHECKING:          # streams reads train_problem from here: no import cycle at run time
    from .streams import StreamSpec

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "linear")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# The constraint on each training setting, written once: (what it must be, test). Checked where a value is
# read — command line, stream file — so the error names the flag or the file and key.
TRAIN_RULES = {
    "epochs": ("an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "batch_size": ("an integer >= 2", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2),
    "lr": ("a finite number >= 0", lambda v: _finite(v) and v >= 0),
    "weight_decay": ("a finite number >= 0", lambda v: _finite(v) and v >= 0),
    "momentum": ("a finite number in [0, 1)", lambda v: _finite(v) and 0 <= v < 1),
    "clip_grad_norm": ("a finite number > 0", lambda v: v is None or (_finite(v) and v > 0)),
    "optimizer": (f"one of {', '.join(OPTIMIZERS)}", lambda v: v in OPTIMIZERS),
    "schedule": (f"one of {', '.join(SCHEDULES)}", lambda v: v in SCHEDULES),
    "decay_bias": ("true or false", lambda v: isinstance(v, bool)),
}
FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "weight_decay": "--weight-decay",
         "momentum": "momentum", "clip_grad_norm": "--clip-grad-norm", "optimizer": "--optimizer",
         "schedule": "--lr-schedule", "decay_bias": "--bias-decay"}


def train_problem(key: str, value) -> str | None:
    """What is wrong with one training setting (``None``: nothing)."""
    rule, ok = TRAIN_RULES[key]
    return None if ok(value) else f"must be {rule}, got {value!r}"
DIRECTIONS = ("both", "a2b")


@dataclass(frozen=True)
class TrainConfig:
    """Per step: ``epochs`` over the step's pairs in batches of ``batch_size``, ``optimizer`` at ``lr``
    with ``weight_decay`` (and ``momentum``, SGD only). Defaults are the paper's; a stream's ``[train]``
    table and the command line override them.

    The Hugging Face Trainer the official code runs under adds three defaults, each an option here (all three
    on with ``--protocol official``): ``schedule = "linear"`` decays the learning rate linearly from ``lr``
    to 0 over each step's iterations (a fresh optimiser and schedule per step, no warm-up);
    ``clip_grad_norm`` clips the global gradient norm of the trained heads right after the backward pass,
    before any method's gradient hook (the Trainer clips before its pre-optimiser-step callback, where
    the official DNS projects); ``decay_bias = false`` exempts biases from weight decay."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-3
    optimizer: str = "adamw"
    momentum: float = 0.0
    schedule: str = "constant"
    clip_grad_norm: float | None = None
    decay_bias: bool = True

    def __post_init__(self):
        for key in TRAIN_RULES:
            problem = train_problem(key, getattr(self, key))
            if problem:
                raise BenchError(f"{FLAGS[key]} {problem}")


@dataclass(frozen=True)
class LossConfig:
    """InfoNCE between the two modalities of a pair. ``both``: symmetric CLIP loss (mean of a→b and b→a
    cross-entropy); ``a2b``: one-way, as in the official CMCL code. ``normalize`` L2-normalises embeddings
    before the dot product."""

    temperature: float = 0.05
    direction: str = "both"
    normalize: bool = False

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise BenchError(f"loss direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if not (_finite(self.temperature) and self.temperature > 0):
            raise BenchError(f"--temperature must be a finite number > 0, got {self.temperature}")


# The official code's loss: cross-entropy m1→m2, temperature 1, raw head outputs.
OFFICIAL_LOSS = LossConfig(temperature=1.0, direction="a2b", normalize=False)
# The Hugging Face Trainer defaults the official code trains under (with OFFICIAL_LOSS: ``--protocol official``).
OFFICIAL_TRAINING = dict(schedule="linear", clip_grad_norm=1.0, decay_bias=False)


@dataclass(frozen=True)
class EvalConfig:
    """The paper's retrieval protocol: Recall@k on ``n_pairs`` random test pairs, ``repeats`` times, when a
    test set is larger; the alignment-score deviation on ``align_pairs`` fixed test pairs."""

    n_pairs: int = 1000
    repeats: int = 5
    align_pairs: int = 256


def stream_hash(spec: StreamSpec) -> str:
    """The stream file's content hash, taken when it was loaded."""
    return spec.sha256


@dataclass(frozen=True)
class RunSpec:
    """One run: one stream × one method (with its resolved options) × one seed, and every setting."""

    stream: StreamSpec
    method: str
    options: Mapping[str, Any]
    seed: int
    train: TrainConfig = TrainConfig()
    loss: LossConfig = LossConfig()
    eval: EvalConfig = EvalConfig()
    device: str = "cpu"
    encoder: str | None = None
    banks: str = "features"
    bank_shas: Mapping[str, str] | None = field(default=None, compare=False)   # filled when banks are read
    # filled when the run starts, if the scenario's benchmark is not the stream file's (bench.scenario.as_run)
    benchmark: Mapping[str, Any] | None = field(default=None, compare=False)
    split: str = "test"            # evaluate on the test pairs, or on validation pairs held out of training
    order: int = 0                 # the steps' order: 0 the stream file's, k > 0 its k-th seeded permutation
    world: int = 0                 # 0 the stream file's simulation seed and draws; k > 0 another world (runner)
    eval_every: int | None = None  # also evaluate the old tasks every N iterations inside each step
    label: str | None = None       # the run's row: the method, or a variant's label (None: the method's name)
    option_sources: Mapping[str, str] | None = None   # where each non-default option came from
    untuned: bool = False          # the stream's tuned settings were ignored (results in <stream>-untuned)
    # False: the stream has tuned settings but none for this method, which runs at its defaults (marked in
    # tables); None: nothing to say (no tuned settings, the method has nothing to tune, or it was tuned)
    tuned: bool | None = None
    heads_dir: str | None = field(default=None, compare=False)   # save the heads after every step there
    log: tuple = field(default=(), compare=False)                # loggers (bench.tracking.LOGGERS) ...
    log_dir: str | None = field(default=None, compare=False)     # ... writing there

    @property
    def row(self) -> str:
        """The run's row in tables and its folder: the method's name, or its variant label."""
        return self.label or self.method

    @classmethod
    def create(cls, stream: StreamSpec, method: str, overrides: Mapping | None = None, seed: int = 0,
               **settings) -> RunSpec:
        """A spec with the method's options resolved (defaults, then ``overrides``); validates both."""
        from .registry import get
        return cls(stream, method, get(method).resolve(dict(overrides or {})), seed, **settings)

    @property
    def result_name(self) -> str:
        """Folder and label of the stream's results: the stream name, plus the encoder for banks."""
        name = f"{self.stream.name}-{self.encoder}" if self.stream.bank_sources and self.encoder else self.stream.name
        return name + ("-untuned" if self.untuned else "")

    def config(self) -> dict:
        """The run's configuration as stored in its record (everything that changes its results)."""
        cfg: dict[str, Any] = {"stream": self.stream.name, "stream_sha256": stream_hash(self.stream), "method": self.method,
               "method_params": dict(self.options), "train": asdict(self.train), "loss": asdict(self.loss),
               "eval": asdict(self.eval), "device": self.device, "split": self.split}
        if self.label:
            cfg["label"] = self.label
        if self.order:              # absent for the stream file's own order and world: earlier hashes hold
            cfg["order"] = self.order
        if self.world:
            cfg["world"] = self.world
        if self.eval_every is not None:
            cfg["eval_every"] = self.eval_every
        if self.option_sources:
            cfg["option_sources"] = dict(self.option_sources)
        if self.tuned is False:
            cfg["tuned"] = False
        if self.stream.bank_sources:
            cfg["encoder"], cfg["banks_sha256"] = self.encoder, dict(self.bank_shas or {})
        if self.benchmark is not None:
            cfg["benchmark"] = dict(self.benchmark)
        return cfg

    @property
    def hash(self) -> str:
        return config_hash(self.config())

    def path(self, out: Path | str) -> Path:
        """Where this run's record goes under the output folder ``out`` (tuning runs, evaluated on validation
        pairs, under ``tuning/``)."""
        from .reporting.records import relative_path
        return self._base(out) / relative_path(self.row, self.seed, self.order, self.world)

    @property
    def run_name(self) -> str:
        """``seed<k>`` (with ``-order<i>``, ``-world<j>``): the run's name within its row."""
        from .reporting.records import run_name
        return run_name(self.seed, self.order, self.world)

    @property
    def run_text(self) -> str:
        """``seed 3`` (``seed 3 order 1 world 2``): the run within its row, in messages."""
        from .reporting.records import run_text
        return run_text(self.seed, self.order, self.world)

    def log_path(self, out: Path | str) -> Path:
        """Where ``--log`` writes this run's logs."""
        return self._base(out) / "logs" / self.row / self.run_name

    def heads_path(self, out: Path | str) -> Path:
        """Where ``--save-heads`` puts this run's heads: a folder of ``step<k>.pt`` files."""
        return self._base(out) / "heads" / self.row / self.run_name

    def _base(self, out: Path | str) -> Path:
        return Path(out) / self.result_name / ("tuning" if self.split == "validation" else "")


def config_hash(config: dict) -> str:
    """A short, stable hash of a run's configuration (key order does not matter)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]

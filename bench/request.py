"""One request: what a user asks of ``python -m bench.run``, typed.

The command line (``from_args``), ``bench.tune`` (a validation request whose methods carry candidate settings)
and ``bench.api`` (one method, one seed: ``from_flags``) each build a ``Request``; ``bench.run.plan`` turns it
into runs and ``bench.run.execute`` trains them. Flags keep their command-line names (``--batch-size`` is
``batch_size``, ``--no-figures`` is ``no_figures``); ``FLAGS`` says which group each one fills. Building a
request parses the text of the command line (seeds, ``--set``, ``--grid``, ``--label``, ``--log``) and checks
its syntax; what needs the stream, the methods or the machine is checked by ``plan``. Torch-free.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import BenchError

DEFAULT_STREAM = "sim-paper"
DEFAULT_SEEDS = "3"


@dataclass(frozen=True)
class TrainingFlags:
    """The training flags; ``None``: not given (the stream's, the encoder's or the default value applies)."""

    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    schedule: str | None = None
    clip_grad_norm: float | None = None
    decay_bias: bool | None = None


@dataclass(frozen=True)
class LossFlags:
    """``--loss`` (``preset``) and the three loss flags; ``None``: not given."""

    preset: str | None = None
    temperature: float | None = None
    direction: str | None = None
    normalize: bool | None = None


@dataclass(frozen=True)
class Execution:
    """Where and how runs train (``bench.executor``)."""

    executor: str = "local"           # local | ray
    jobs: int | None = None           # None: one per CPU core this process may use, 1 on a GPU; Ray with
                                      # --address: the cluster's resources
    threads: int = 1
    device: str = "cpu"
    address: str | None = None        # a Ray cluster's
    max_retries: int | None = None    # Ray: starts again of a run lost to the system (None: 3)
    gpus_per_run: float | None = None  # Ray: GPUs per run (None: 1 with --device cuda, else 0)


@dataclass(frozen=True)
class Request:
    methods: tuple[str, ...] | None = None        # None: every registered method
    stream: str = DEFAULT_STREAM                  # a built-in stream's name or a stream file's path
    seeds: tuple[int, ...] = (0, 1, 2)
    orders: int = 1                               # task orders: the file's, then seeded permutations
    worlds: int = 1                               # worlds: the file's simulation seed and draws, then others
    first_world: int = 0                          # bench.tune: its worlds start above the reported ones
    eval_every: int | None = None                 # within-step evaluations of the old tasks (stability gap)
    encoder: str | None = None
    banks: str = "features"
    sets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)    # --set: method -> option -> value
    grids: Mapping[str, Mapping[str, list]] = field(default_factory=dict)  # --grid: method -> option -> values
    labels: Mapping[str, str] = field(default_factory=dict)                # --label: method -> row name
    # bench.tune: the settings tried per method (they take --grid's place)
    candidates: Mapping[str, list[dict]] | None = None
    protocol: str = "paper"
    training: TrainingFlags = TrainingFlags()
    loss: LossFlags = LossFlags()
    untuned: bool = False
    split: str = "test"                           # test | validation (bench.tune)
    execution: Execution = Execution()
    out: str = "results"
    force: bool = False
    wait: bool = False                            # for runs another runner has claimed, instead of exit 3
    log: tuple[str, ...] = ()
    save_heads: bool = False
    no_figures: bool = False
    compare: str | None = None                    # the table's reference row (None: the naive method's)

    @property
    def world_range(self) -> range:
        """The worlds this request runs: ``worlds`` of them from ``first_world``."""
        return range(self.first_world, self.first_world + self.worlds)

    @classmethod
    def from_flags(cls, **flags) -> Request:
        """A request from flags by their command-line names (``FLAGS``), values already typed."""
        groups: dict[str, dict] = {"training": {}, "loss": {}, "execution": {}, "": {}}
        for name, value in flags.items():
            if name not in FLAGS:
                raise BenchError(f"unknown flag {name!r}")
            group, key = FLAGS[name]
            groups[group][key] = value
        return cls(**groups[""], training=TrainingFlags(**groups["training"]), loss=LossFlags(**groups["loss"]),
                   execution=Execution(**groups["execution"]))

    @classmethod
    def from_args(cls, args) -> Request:
        """The command line's request: ``args`` as ``bench.run.build_parser`` parses them."""
        from . import catalogue
        from .settings import parse_grid
        from .tracking import parse_log
        known = catalogue.names()
        grids = parse_grid(args.grids, known)
        typed = {"methods": parse_methods(args.methods), "seeds": tuple(parse_seeds(args.seeds)),
                 "sets": parse_sets(args.sets, known), "grids": grids,
                 "labels": parse_labels(args.labels, known, grids), "log": parse_log(args.log)}
        return cls.from_flags(**{name: typed.get(name, getattr(args, name)) for name in FLAGS
                                 if name in typed or hasattr(args, name)})


def _flags() -> dict[str, tuple[str, str]]:
    """flag name -> (group, field): the command line's dests, each filling one field of the request."""
    out = {f.name: ("training", f.name) for f in fields(TrainingFlags)}
    out.update({f.name: ("loss", f.name) for f in fields(LossFlags) if f.name != "preset"})
    out["loss"] = ("loss", "preset")
    out.update({f.name: ("execution", f.name) for f in fields(Execution)})
    out.update({f.name: ("", f.name) for f in fields(Request)
                if f.name not in ("training", "loss", "execution")})
    return out


FLAGS = _flags()


def parse_methods(text: str) -> tuple[str, ...] | None:
    """``all`` → None; else the listed names, a repeated one once."""
    if text == "all":
        return None
    names = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if not names:
        raise BenchError("--methods is empty")
    return names


MAX_SEEDS = 1000          # seeds of one sweep (each is one run per method): a typo, not a plan, beyond it
MAX_SEED = 2 ** 32 - 1    # numpy's and most libraries' seed range


def parse_seeds(text: str) -> list[int]:
    shown = text if len(text) <= 40 else text[:37] + "..."
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            n = int(text)
            if n < 1:
                raise ValueError
            if n > MAX_SEEDS:
                raise BenchError(f"--seeds {shown}: at most {MAX_SEEDS} seeds in one sweep (a list i,j picks any "
                                 f"seeds up to {MAX_SEED})")
            seeds = list(range(n))
    except ValueError:
        raise BenchError(f"--seeds must be a positive count N or a list i,j of integers, got {shown!r}") from None
    if not seeds:
        raise BenchError(f"--seeds lists no seed, got {shown!r}")
    if len(set(seeds)) != len(seeds) or any(not 0 <= s <= MAX_SEED for s in seeds):
        raise BenchError(f"--seeds must list distinct integers from 0 to {MAX_SEED}, got {shown!r}")
    if len(seeds) > MAX_SEEDS:
        raise BenchError(f"--seeds {shown}: at most {MAX_SEEDS} seeds in one sweep")
    return seeds


def parse_sets(sets: list[str], known: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for s in sets:
        key, eq, value = s.partition("=")
        method, dot, param = key.rpartition(".")
        if not eq or not dot or not method or not param:
            raise BenchError(f"--set expects METHOD.PARAM=VALUE, got {s!r}")
        if method not in known:
            raise BenchError(f"--set {s!r}: unknown method {method!r}; available: {', '.join(known)}")
        out.setdefault(method, {})[param] = value
    return out


def parse_labels(items: list[str], known: list[str], grids: Mapping) -> dict[str, str]:
    from .settings import check_label
    out = {}
    for item in items:
        method, eq, name = item.partition("=")
        if not eq or method not in known:
            raise BenchError(f"--label expects METHOD=NAME with a known method, got {item!r}")
        if method in grids:
            raise BenchError(f"--label {item!r}: {method} has a --grid, whose variants are labelled by their values")
        out[method] = check_label(name, f"--label {item!r}")
    return out

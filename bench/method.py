"""The method contract: what a continual-learning method is, what it sees, and when it is called.

A method is one class in ``methods/``, registered by name (``bench.registry.register``). It declares its
options (``defaults``; ``choices`` for string options; ``types`` for options whose default is ``None``) and
its ``role`` in the comparison, and overrides only the hooks it needs — named after Avalanche's plugin
vocabulary, called by ``bench.trainer`` around a lean loop (an unused hook costs nothing there).
``methods/README.md`` is the guide, with the hook table.

What a method sees (``Context``): the heads and the run's settings, every step's metadata (``tasks``), and
the data of the current step only (``train``, ``source_features``). Only a method that declares
``sees_old_data = True`` (the ``joint`` reference) may ask the trainer to iterate over earlier steps' data;
replay methods keep their own buffers, filled from the current step's data while they see it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

import torch

from . import seeds
from .errors import BenchError
from .heads import Heads
from .loss import LossConfig
from .roles import FAMILIES, ROLES
from .streams import Step

HOOKS = ("before_training_exp", "before_backward", "after_backward", "before_update", "after_update",
         "after_training_exp")


@dataclass
class Context:
    """What a method sees.

    Per run: ``heads`` (``heads[m]`` is modality m's ``nn.Linear``), ``loss_cfg``, ``device``, ``seed`` (the
    run's; random draws go through ``rng``), ``tasks`` (every step's metadata: index, source, pair, metrics,
    name — never data). Per step: ``step`` (0-based), ``task`` (its metadata), ``train`` (its (x_a, x_b)
    training matrices), ``source_features`` (its source's training features of every modality, e.g. for
    ``dns-official``'s column option), ``optimizer``. Per batch: ``batch_task`` (the step the batch comes from),
    ``xa``, ``xb``, ``za``, ``zb`` (inputs and head outputs), ``loss`` (``before_backward`` may add terms)."""

    heads: Heads
    loss_cfg: LossConfig
    device: torch.device
    seed: int
    tasks: tuple[Step, ...]
    optimizer: torch.optim.Optimizer | None = None
    step: int = -1
    task: Step | None = None
    train: tuple[torch.Tensor, torch.Tensor] | None = None
    source_features: dict[str, torch.Tensor] | None = None
    batch_task: int | None = None
    xa: torch.Tensor | None = None
    xb: torch.Tensor | None = None
    za: torch.Tensor | None = None
    zb: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    infonce: torch.Tensor | None = None     # the batch's InfoNCE before the method's terms (a closure step)
    extra: dict = field(default_factory=dict)

    @property
    def pair(self) -> tuple[str, str]:
        return self.task.pair

    def rng(self, purpose: str, salt: int = 0, seed: int | None = None) -> torch.Generator:
        """A generator for one of this step's random streams (``bench.seeds``): from the run's seed, or from
        ``seed`` when a method's option overrides it."""
        return seeds.generator(self.seed if seed is None else seed, purpose, self.step, salt)


def _parse(value: str, kind: type, key: str):
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise BenchError(f"option {key} expects true/false, got {value!r}")
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise BenchError(f"option {key} expects an integer, got {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except ValueError:
            raise BenchError(f"option {key} expects a number, got {value!r}") from None
    return value


class Options:
    """A method's option values, read-only (``self.options.lambda_min``): options never mix with state."""

    __slots__ = ("_values",)

    def __init__(self, values: dict):
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __getattr__(self, key):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        raise AttributeError(f"options are read-only ({key})")

    def as_dict(self) -> dict:
        return dict(self._values)


class Method:
    """Base class. Subclasses declare ``defaults`` (every option and its default, overridable with
    ``--set name.key=value``), ``choices`` (allowed values of string options), ``types`` (the type of an
    option whose default is ``None``, which means "derived at run time"), ``search_space`` (the values
    ``python -m bench.tune`` tries, per option: the method's stability–plasticity knobs, each list holding
    the default), ``role`` (one of ``bench.roles.ROLES``: table position; references are never bolded),
    ``family`` (one of ``bench.roles.FAMILIES``: its hue in the figures) and ``sees_old_data``."""

    name: ClassVar[str] = "?"
    role: ClassVar[str] = "baseline"
    family: ClassVar[str] = "other"
    sees_old_data: ClassVar[bool] = False  # True: train_tasks may return earlier steps (joint); never a CL method
    uses_closure: ClassVar[bool] = False   # True: the trainer calls optimizer.step(closure) (see wrap_optimizer)
    defaults: ClassVar[dict] = {}
    choices: ClassVar[dict[str, tuple]] = {}
    types: ClassVar[dict[str, type]] = {}
    search_space: ClassVar[dict[str, list]] = {}
    # numeric options are finite and >= 0 unless ``bounds`` says otherwise: key -> (low, high, low_open)
    bounds: ClassVar[dict[str, tuple]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.role not in ROLES:
            raise TypeError(f"{cls.__name__}.role must be one of {ROLES}, got {cls.role!r}")
        if cls.family not in FAMILIES:
            raise TypeError(f"{cls.__name__}.family must be one of {FAMILIES}, got {cls.family!r}")
        for key, values in cls.search_space.items():
            if key not in cls.defaults or cls.defaults[key] not in values:
                raise TypeError(f"{cls.__name__}.search_space[{key!r}] must be an option's values, its default "
                                f"({cls.defaults.get(key)!r}) among them")
        for key, value in cls.defaults.items():
            if value is None and key not in cls.types:
                raise TypeError(f"{cls.__name__}: option {key!r} defaults to None; declare its type in `types`")

    @classmethod
    def option_type(cls, key: str) -> type:
        default = cls.defaults[key]
        return cls.types.get(key) or type(default)

    @classmethod
    def resolve(cls, overrides: dict) -> dict:
        """Every option's value: the defaults, overridden (strings from the command line are parsed to the
        option's type). A one-line ``BenchError`` for an unknown option or a bad value."""
        params = dict(cls.defaults)
        for key, value in overrides.items():
            if key not in cls.defaults:
                allowed = ", ".join(cls.defaults) or "none"
                raise BenchError(f"method {cls.name!r} has no option {key!r} (options: {allowed})")
            if isinstance(value, str) and not (cls.defaults[key] is None and value.lower() == "none"):
                value = _parse(value, cls.option_type(key), f"{cls.name}.{key}")
            elif isinstance(value, str):
                value = None
            elif isinstance(value, int) and not isinstance(value, bool) and cls.option_type(key) is float:
                value = float(value)
            params[key] = value
        for key, allowed in cls.choices.items():
            if params[key] not in allowed:
                raise BenchError(f"option {cls.name}.{key} must be one of {', '.join(map(str, allowed))}, "
                                 f"got {params[key]!r}")
        for key, value in params.items():
            problem = cls.option_problem(key, value)
            if problem:
                raise BenchError(f"option {cls.name}.{key} {problem}")
        return params

    @classmethod
    def option_problem(cls, key: str, value) -> str | None:
        """What is wrong with a numeric option's value (``None``: nothing): not finite, or outside
        ``bounds[key]`` (default: >= 0)."""
        import math
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not math.isfinite(value):
            return f"must be finite, got {value}"
        low, high, low_open = cls.bounds.get(key, (0, None, False))
        if low is not None and (value <= low if low_open else value < low):
            return f"must be {'>' if low_open else '>='} {low}, got {value}"
        if high is not None and value > high:
            return f"must be <= {high}, got {value}"
        return None

    def __init__(self, **overrides):
        self.options = Options(self.resolve(overrides))

    def __setattr__(self, key, value):
        if key in type(self).defaults:      # an option set as state would be silently ignored
            raise AttributeError(f"{self.name}.{key} is an option, fixed when the method is built; "
                                 f"read it as self.options.{key} and keep state under another name")
        object.__setattr__(self, key, value)

    @property
    def params(self) -> dict:
        return self.options.as_dict()

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    # --- what to train on this experience ---------------------------------------------------------
    def train_tasks(self, ctx: Context) -> list[int]:
        """Indices of the steps whose training data this experience iterates over (per-pair batches).
        Default: the current step only; ``[]`` skips training. Earlier steps only with ``sees_old_data``."""
        return [ctx.step]

    def trainable_modalities(self, ctx: Context, tasks: list[int]) -> list[str]:
        """Heads the optimiser updates: the modalities of the pairs trained on."""
        out = []
        for j in tasks:
            for m in ctx.tasks[j].pair:
                if m not in out:
                    out.append(m)
        return out

    def wrap_optimizer(self, optimizer, ctx: Context):
        """Return the optimiser the step uses (default: the run's own). A sharpness-aware method returns a
        wrapper whose ``step(closure)`` may evaluate the closure several times; set ``uses_closure = True``."""
        return optimizer

    # --- hooks (Avalanche plugin vocabulary) -------------------------------------------------------
    def before_training_exp(self, ctx: Context) -> None: ...
    def before_backward(self, ctx: Context) -> None: ...
    def after_backward(self, ctx: Context) -> None: ...
    def before_update(self, ctx: Context) -> None: ...
    def after_update(self, ctx: Context) -> None: ...
    def after_training_exp(self, ctx: Context) -> None: ...

    def state_summary(self) -> dict:
        """Extra facts recorded in the run record (``method_state``, e.g. projector ranks)."""
        return {}

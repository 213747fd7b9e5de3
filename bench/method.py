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

import torch

from . import seeds
from .heads import Heads
from .loss import LossConfig
from .method_spec import MethodSpec
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
    grad_scale: torch.Tensor | None = None  # with --clip-grad-norm: the factor the batch's gradient was scaled by
    extra: dict = field(default_factory=dict)

    @property
    def pair(self) -> tuple[str, str]:
        assert self.task is not None, "a context's pair is read while a task trains"
        return self.task.pair

    def rng(self, purpose: str, salt: int = 0, seed: int | None = None) -> torch.Generator:
        """A generator for one of this step's random streams (``bench.seeds``): from the run's seed, or from
        ``seed`` when a method's option overrides it."""
        return seeds.generator(self.seed if seed is None else seed, purpose, self.step, salt)


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


class Method(MethodSpec):
    """Base class of every method: the declarations of ``MethodSpec`` (options, role, family), the hooks the
    trainer calls, and the option values of one instance (``self.options``, read-only)."""

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

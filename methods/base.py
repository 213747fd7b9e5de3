"""The method interface: hooks named after Avalanche's plugin vocabulary, called by ``bench.trainer``.

A method overrides only the hooks it needs; the trainer calls a hook only if the method overrides it, so
an unused hook costs nothing in the hot loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from bench.errors import BenchError


@dataclass
class Context:
    """What a method sees. Set per experience: ``heads``, ``optimizer``, ``task`` (current step's metadata
    and source), ``step`` (0-based), ``tasks`` (all steps' metadata; a method must not read the data of
    steps other than the current one unless it is a reference such as ``joint``), ``train`` (the current
    step's (x_a, x_b) training matrices). Set per batch: ``batch_task`` (the task the batch comes from),
    ``xa``, ``xb``, ``za``, ``zb`` (inputs and head outputs), ``loss`` (a method may add terms to it in
    ``before_backward``)."""

    heads: Any
    loss_cfg: Any
    device: torch.device
    tasks: list
    optimizer: Any = None
    step: int = -1
    task: Any = None
    train: tuple | None = None
    batch_task: Any = None
    xa: torch.Tensor | None = None
    xb: torch.Tensor | None = None
    za: torch.Tensor | None = None
    zb: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    @property
    def pair(self) -> tuple[str, str]:
        return self.task.pair


def _parse(value: str, default, key: str):
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise BenchError(f"option {key} expects true/false, got {value!r}")
    if isinstance(default, int):
        try:
            return int(value)
        except ValueError:
            raise BenchError(f"option {key} expects an integer, got {value!r}") from None
    if isinstance(default, float) or default is None:
        if default is None and value.lower() == "none":
            return None
        try:
            return float(value)
        except ValueError:
            raise BenchError(f"option {key} expects a number, got {value!r}") from None
    return value


class Method:
    """Base class. Subclasses set ``defaults`` (hyper-parameters, overridable with ``--set name.key=value``),
    ``choices`` (allowed values of string options) and ``order`` (position in tables: 0–4 lower references,
    5 Vanilla, 10 baselines, 20 DNS variants, 30 upper references; references are never bolded)."""

    name: ClassVar[str] = "?"
    uses_closure: ClassVar[bool] = False   # True: the trainer calls optimizer.step(closure) (see wrap_optimizer)
    defaults: ClassVar[dict] = {}
    choices: ClassVar[dict[str, tuple]] = {}
    order: ClassVar[int] = 10

    def __init__(self, **overrides):
        self.params = dict(self.defaults)
        for key, value in overrides.items():
            if key not in self.defaults:
                allowed = ", ".join(self.defaults) or "none"
                raise BenchError(f"method {self.name!r} has no option {key!r} (options: {allowed})")
            if isinstance(value, str):
                value = _parse(value, self.defaults[key], f"{self.name}.{key}")
            self.params[key] = value
        for key, allowed in self.choices.items():
            if self.params[key] not in allowed:
                raise BenchError(f"option {self.name}.{key} must be one of {', '.join(map(str, allowed))}, "
                                 f"got {self.params[key]!r}")
        for key, value in self.params.items():
            setattr(self, key, value)

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    # --- what to train on this experience ---------------------------------------------------------
    def train_tasks(self, ctx: Context) -> list[int]:
        """Indices of the tasks whose training data this experience iterates over (per-pair batches).
        Default: the current step only. ``[]`` skips training."""
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
        """Extra facts recorded in the run JSON (e.g. projector ranks)."""
        return {}


HOOKS = ("before_training_exp", "before_backward", "after_backward", "before_update", "after_update",
         "after_training_exp")

"""What a method declares, without torch: its options (defaults, allowed values, types, bounds), the values
``python -m bench.tune`` tries, its role in the table and its family in the figures, and how option values
given as text are parsed and checked.

``bench.method.Method`` derives from ``MethodSpec`` and adds the hooks. The command line plans, validates and
lists runs from these declarations alone (``bench.catalogue`` keeps them for each method without importing
the methods, so nothing imports torch before a run will train).
"""
from __future__ import annotations

import math
from typing import ClassVar

from .errors import BenchError

# -- roles and families: where a method's row goes, whether it competes for bold, its hue ---------------
# table order, top to bottom
ROLES = ("lower-reference",   # no continual learning at all (frozen: the zero-shot model)
         "naive",             # sequential fine-tuning (vanilla): the lower bound of every CL table
         "baseline",          # continual-learning methods from the literature
         "proposed",          # the paper's method and its variants (dns, dns-official)
         "upper-reference")   # sees old data (joint): not a continual-learning method
REFERENCES = ("lower-reference", "upper-reference")   # shown, never bolded


# what a method does to keep old tasks: the figures colour a family with one hue, so families are
# recognisable at a glance (the colours: bench/reporting/style.py)
FAMILIES = ("reference",       # frozen, joint: not continual learning
            "naive",           # sequential fine-tuning
            "regularisation",  # a penalty anchoring important weights (EWC, SI, MAS, L2)
            "distillation",    # the old model's similarities as targets (LwF, Co2L, CILA)
            "replay",          # a buffer of old pairs (ER, DER, GEM, A-GEM)
            "null-space",      # updates projected away from old tasks' inputs (DNS, GPM, Adam-NSCL)
            "optimiser",       # a different optimiser (C-Flat)
            "other")           # the default of a new method that declares none


def role_rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else ROLES.index("baseline")


def role_from_order(order: int) -> str:
    """The role of a run file written before roles existed (it recorded a numeric ``order``)."""
    if order < 5:
        return "lower-reference"
    if order == 5:
        return "naive"
    if order >= 30:
        return "upper-reference"
    return "proposed" if order >= 20 else "baseline"



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


class MethodSpec:
    """Subclasses declare ``defaults`` (every option and its default, overridable with ``--set
    name.key=value``), ``choices`` (allowed values of string options), ``types`` (the type of an option whose
    default is ``None``, which means "derived at run time"), ``bounds``, ``search_space`` (the values
    ``python -m bench.tune`` tries, per option: the method's stability–plasticity knobs, each list holding
    the default), ``role`` (one of ``ROLES``: table position; references are never bolded),
    ``family`` (one of ``FAMILIES``: its hue in the figures) and ``sees_old_data``."""

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
                from .describe import did_you_mean
                raise BenchError(f"method {cls.name!r} has no option {key!r};{did_you_mean(key, cls.defaults)} "
                                 f"(options: {allowed})")
            if isinstance(value, str) and not (cls.defaults[key] is None and value.lower() == "none"):
                value = _parse(value, cls.option_type(key), f"{cls.name}.{key}")
            elif isinstance(value, str):
                value = None
            elif isinstance(value, int) and not isinstance(value, bool) and cls.option_type(key) is float:
                value = float(value)
            params[key] = value
        for key, choices in cls.choices.items():
            if params[key] not in choices:
                raise BenchError(f"option {cls.name}.{key} must be one of {', '.join(map(str, choices))}, "
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

    @classmethod
    def describe(cls) -> str:
        """The first line of the docstring (what ``--list`` shows)."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

"""The methods registry: one file per continual-learning method, registered by name with ``@register``.

Every module in this package is imported on first use of the registry, so adding a method is adding one
file. See README.md, "Add a baseline".
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import Method, Context  # noqa: F401  (re-exported for method files)

_REGISTRY: dict[str, type[Method]] = {}
_loaded = False


def register(name: str):
    """Class decorator: ``@register("ewc") class EWC(Method): ...``."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} is registered twice ({_REGISTRY[name].__module__}, {cls.__module__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_all():
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            if mod.name != "base":
                importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True


def registry() -> dict[str, type[Method]]:
    """All methods, in table order: lower references, baselines, DNS variants, upper references."""
    _load_all()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def names() -> list[str]:
    return list(registry())


def get(name: str) -> type[Method]:
    reg = registry()
    if name not in reg:
        from bench.errors import BenchError
        raise BenchError(f"unknown method {name!r}; available: {', '.join(reg)}")
    return reg[name]

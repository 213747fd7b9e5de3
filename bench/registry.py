"""The method registry: every module of the ``methods`` package is imported on first use, and each method
class registers itself by name with ``@register``. Adding a method is adding one file.

``bench`` never imports ``methods`` statically (methods depend on ``bench``, not the reverse): the package
is discovered here, at run time.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from .errors import BenchError
from .method_spec import role_rank

if TYPE_CHECKING:
    from .method import Method

_REGISTRY: dict[str, type] = {}
_loaded = False
PACKAGE = "methods"


def register(name: str):
    """Class decorator: ``@register("ewc") class EWC(Method): ...``."""

    from .files import name_problem
    if name_problem(name):          # the name is a results folder: a method file's mistake, said at import
        raise ValueError(f"method name {name!r} {name_problem(name)}")

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} is registered twice ({_REGISTRY[name].__module__}, {cls.__module__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_all():
    global _loaded
    if not _loaded:
        pkg = importlib.import_module(PACKAGE)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{PACKAGE}.{mod.name}")
        _loaded = True


def in_table_order(table: dict, role_of) -> dict:
    """``table`` (name -> anything) in table order: by role (lower reference, naive, baselines, proposed,
    upper reference; ``role_of(value)``), then by name."""
    return dict(sorted(table.items(), key=lambda kv: (role_rank(role_of(kv[1])), kv[0])))


def lookup(table: dict, name: str):
    """``table[name]``, or the one-line error naming the methods there are."""
    if name not in table:
        from .describe import did_you_mean
        raise BenchError(f"unknown method {name!r};{did_you_mean(name, table)} available: {', '.join(table)}")
    return table[name]


def registry() -> dict[str, type[Method]]:
    """All methods, in table order."""
    _load_all()
    return in_table_order(_REGISTRY, lambda cls: cls.role)


def names() -> list[str]:
    return list(registry())


def get(name: str) -> type[Method]:
    return lookup(registry(), name)

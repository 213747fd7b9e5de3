"""Every registered method's declarations (``MethodSpec``: options, role, family, description) without
importing the methods — which import torch, a second or more — so that ``--list``, every argument error and
a rerun with nothing to do answer at once.

The declarations are read from the real classes (``bench.registry``) once and cached as JSON under
``$CMCL_BENCH_CACHE`` (default ``~/.cache/cmcl-bench``), keyed by the content of every file they can depend
on (``methods/*.py`` and the contract modules): a new or edited method file is a new key, read from the
real classes again. An unwritable cache only costs the import. What ``get`` returns is a ``MethodSpec``
subclass with the same declarations, so options resolve through the very same code as in a run.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
from pathlib import Path

from .method_spec import MethodSpec
from .registry import in_table_order, lookup

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
_FIELDS = ("role", "family", "sees_old_data", "uses_closure", "defaults", "choices", "search_space", "bounds")
_SPECS: dict[str, type] | None = None


def _sources() -> list[Path]:
    spec = importlib.util.find_spec("methods")
    folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    here = Path(__file__).parent
    own = [here / f for f in ("method_spec.py", "method.py", "registry.py", "catalogue.py")]
    return own + sorted(p for d in folders for p in d.glob("*.py"))


def cache_key() -> str:
    h = hashlib.sha256()
    for p in _sources():
        h.update(str(p).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    return Path(os.environ.get("CMCL_BENCH_CACHE") or Path.home() / ".cache" / "cmcl-bench")


def _declarations() -> dict:
    """Read from the real classes (imports every method, and torch)."""
    from .registry import registry
    out = {}
    for name, cls in registry().items():
        d = {k: getattr(cls, k) for k in _FIELDS}
        d["types"] = {k: t.__name__ for k, t in cls.types.items()}
        d["description"] = cls.describe()
        d["doc"] = inspect.cleandoc(cls.__doc__ or "")
        out[name] = d
    return out


def _load_or_build() -> dict:
    path = cache_dir() / f"methods-{cache_key()}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    data = _declarations()
    try:
        from .files import write_atomic
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        pass                     # a read-only home: the declarations are read from the classes every time
    return data


def _spec_class(name: str, d: dict) -> type[MethodSpec]:
    attrs = {k: d[k] for k in _FIELDS}
    attrs["types"] = {k: _TYPES[t] for k, t in d["types"].items()}
    attrs["choices"] = {k: tuple(v) for k, v in d["choices"].items()}
    attrs["bounds"] = {k: tuple(v) for k, v in d["bounds"].items()}
    attrs["__doc__"] = d["doc"]
    attrs["name"] = name
    return type(f"Spec[{name}]", (MethodSpec,), attrs)


def specs() -> dict[str, type[MethodSpec]]:
    """name -> declarations, in table order (by role, then name), as ``registry.registry()``."""
    global _SPECS
    if _SPECS is None:
        data = _load_or_build()
        _SPECS = {n: _spec_class(n, d) for n, d in in_table_order(data, lambda d: d["role"]).items()}
    return _SPECS


def names() -> list[str]:
    return list(specs())


def get(name: str) -> type[MethodSpec]:
    return lookup(specs(), name)

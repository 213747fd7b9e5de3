"""Variants of a method: runs that differ in their options coexist, each under its own label.

A run is identified by its method and its resolved options. Options equal to the method's base for the
stream (its defaults, then the stream's settings for the encoder, then the stream's tuned settings) keep the
plain method name; any other setting is a variant labelled ``method[key=value,...]`` with the differing
options in key order — its own run files, its own table row. ``--grid`` expands a method into the cartesian
product of the listed values. Torch-free.
"""
from __future__ import annotations

import itertools

from .errors import BenchError


def format_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format(v, "g")
    return str(v)


def variant_label(method: str, options: dict, base: dict) -> str | None:
    """None when ``options`` equal ``base``; else ``method[k=v,...]`` over the options that differ."""
    diff = [k for k in sorted(options) if options[k] != base.get(k)]
    if not diff:
        return None
    return f"{method}[{','.join(f'{k}={format_value(options[k])}' for k in diff)}]"


def check_label(label: str, where: str) -> str:
    from .files import check_name
    return check_name(label, f"{where}: a label")


def parse_grid(grids: list[str], known: list[str]) -> dict[str, dict[str, list[str]]]:
    """``--grid METHOD.PARAM=v1,v2,...`` (repeatable) → ``{method: {param: [values]}}``."""
    out: dict[str, dict[str, list[str]]] = {}
    for g in grids:
        key, eq, values = g.partition("=")
        method, dot, param = key.rpartition(".")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not dot or not method or not param or not vals:
            raise BenchError(f"--grid expects METHOD.PARAM=V1,V2,..., got {g!r}")
        if method not in known:
            raise BenchError(f"--grid {g!r}: unknown method {method!r}; available: {', '.join(known)}")
        if param in out.get(method, {}):
            raise BenchError(f"--grid {g!r}: {method}.{param} is given twice")
        if len(set(vals)) != len(vals):
            raise BenchError(f"--grid {g!r}: a value is listed twice")
        out.setdefault(method, {})[param] = vals
    return out


def grid_points(grid: dict[str, list]) -> list[dict]:
    """The cartesian product of a method's grid, in the order given (``[{}]`` without a grid)."""
    if not grid:
        return [{}]
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]

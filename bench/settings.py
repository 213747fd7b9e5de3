"""Where each setting of a run comes from: five layers, each overriding the one before::

    method defaults  <  stream  <  per-encoder settings  <  tuned  <  command line

- **defaults**: a method's ``defaults``; ``TrainConfig``'s and ``LossConfig``'s field defaults (the paper's);
- **stream**: the stream file's ``[train]`` table (a stream sets method options only per encoder);
- **per-encoder settings**: the stream file's ``[settings.<encoder>]`` (its ``train`` table and one table per
  method), applied with ``--encoder``;
- **tuned**: the stream's tuned-settings file (``bench.tuned``), method options only: it records the training
  settings it was tuned with but does not set them (a mismatch is one warning line);
- **command line**: ``--set`` then ``--grid`` (or ``bench.tune``'s candidates) for method options;
  ``--protocol``'s preset then the individual flags for training and loss (``bench.request.Request``).

Variants: Variants of a method: runs that differ in their options coexist, each under its own label.

A run is identified by its method and its resolved options. Options equal to the method's base for the
stream (its defaults, then the stream's settings for the encoder, then the stream's tuned settings) keep the
plain method name; any other setting is a variant labelled ``method[key=value,...]`` with the differing
options in key order — its own run files, its own table row. ``--grid`` expands a method into the cartesian
product of the listed values. Torch-free.

``layered`` is the one function that merges layers; every option, training and loss setting of a run goes
through it (``method_variants``, ``training``, ``loss``). Torch-free.
"""
from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from .errors import BenchError

PRECEDENCE = ("defaults", "stream", "encoder", "tuned", "command line")

# one layer: (its name in PRECEDENCE, its values, how a run's option_sources names it or None)
Layer = tuple[str, Mapping, "str | None"]


def layered(layers: Sequence[Layer]) -> tuple[dict, dict[str, str]]:
    """The merged values of ``layers`` (given in ``PRECEDENCE`` order, later ones winning) and, for every key a
    named layer sets, the name of the last one that set it."""
    values: dict = {}
    sources: dict[str, str] = {}
    rank = -1
    for name, given, source in layers:
        if PRECEDENCE.index(name) < rank:
            raise ValueError(f"settings layer {name!r} given after a later layer")   # a programming error
        rank = PRECEDENCE.index(name)
        values.update(given)
        if source is not None:
            sources.update(dict.fromkeys(given, source))
    return values, sources


def encoder_settings(spec, encoder: str | None, known: list[str]) -> dict:
    """The stream's ``[settings.<encoder>]``, validated (method names and options), or ``{}``."""
    from . import catalogue
    settings = spec.settings.get(encoder, {}) if encoder else {}
    for key, opts in settings.items():
        if key == "train":
            continue
        where = f"stream file {spec.path} [settings.{encoder}.{key}]"
        if key not in known:
            raise BenchError(f"{where}: unknown method {key!r}; available: {', '.join(known)}")
        try:
            catalogue.get(key).resolve(opts)
        except BenchError as e:
            raise BenchError(f"{where}: {e}") from None
    return settings


def method_variants(method: str, encoder_opts: Mapping, tuned_opts: Mapping, tuned_source: str | None,
                    sets: Mapping, points: Sequence[Mapping], label: str | None = None) -> list:
    """The variants of one method to run: ``[(options, label or None, {option: source})]``, one per point of
    its grid (``[{}]`` without one). The base (every layer but the command line) keeps the plain method name."""
    from . import catalogue
    cls = catalogue.get(method)
    for p in {k for point in points for k in point}:
        if p in sets:
            raise BenchError(f"{method}.{p} is given by both --set and --grid")
    below: list[Layer] = [("defaults", cls.defaults, None), ("encoder", encoder_opts, "stream settings"),
                          ("tuned", tuned_opts, f"tuned ({tuned_source})" if tuned_source else None)]
    try:
        base = cls.resolve(layered(below)[0])
    except BenchError as e:
        raise BenchError(f"tuned settings {tuned_source}: {e}") from None
    out: list = []
    seen: dict[str, Mapping] = {}
    for point in points:
        values, sources = layered([*below, ("command line", sets, "--set"), ("command line", point, "--grid")])
        opts = cls.resolve(values)
        key = json.dumps(opts, sort_keys=True, default=str)
        if key in seen:           # 0.1 and 1e-1: one setting, one run (two would share a label and a file)
            print(f"note: {method}: {_shown(point)} is the setting of {_shown(seen[key])}; it runs once",
                  file=sys.stderr)
            continue
        seen[key] = point
        out.append((opts, label or variant_label(method, opts, base), sources))
    return out


def _shown(point: Mapping) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items()) or "the base setting"


def training(spec, encoder_opts: Mapping, request):
    """The run's ``TrainConfig``: defaults < the stream's ``[train]`` < the encoder's ``train`` < the
    command line (``--protocol official``'s preset, then the training flags)."""
    from .config import OFFICIAL_TRAINING, TrainConfig
    preset = OFFICIAL_TRAINING if request.protocol == "official" else {}
    flags = {k: v for k, v in asdict(request.training).items() if v is not None}
    values, _ = layered([("defaults", asdict(TrainConfig()), None), ("stream", spec.train, None),
                         ("encoder", encoder_opts.get("train", {}), None),
                         ("command line", preset, None), ("command line", flags, None)])
    return TrainConfig(**values)


def loss(request):
    """The run's ``LossConfig``: defaults < the command line (the loss preset — ``--loss``, else
    ``--protocol``'s — then ``--temperature``, ``--direction``, ``--normalize``)."""
    from .config import OFFICIAL_LOSS, LossConfig
    flags = request.loss
    official = flags.preset == "official" or (flags.preset is None and request.protocol == "official")
    given = {k: v for k, v in (("temperature", flags.temperature), ("direction", flags.direction),
                               ("normalize", flags.normalize)) if v is not None}
    values, _ = layered([("defaults", asdict(LossConfig()), None),
                         ("command line", asdict(OFFICIAL_LOSS) if official else {}, None),
                         ("command line", given, None)])
    return LossConfig(**values)


# -- variants: labels and --grid ------------------------------------------------------------------------
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

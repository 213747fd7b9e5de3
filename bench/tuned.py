"""Tuned settings: the options ``python -m bench.tune`` selected for each method on a stream (and encoder),
on validation pairs, with their provenance. ``bench.run`` applies them between the stream's own settings and
``--set``.

The file sits next to its stream file — ``<stream>.tuned.json``, or ``<stream>.tuned-<encoder>.json`` for a
stream of feature banks — so the built-in streams ship theirs inside the package. It records the stream
file's content hash; settings tuned on another version of the stream are not applied (one warning line).
Torch-free.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import BenchError
from .files import write_atomic

SCHEMA = 1


def tuned_path(spec, encoder: str | None) -> Path:
    stem = spec.path.name.removesuffix(".toml")
    suffix = f".tuned-{encoder}.json" if spec.bank_sources and encoder else ".tuned.json"
    return spec.path.parent / f"{stem}{suffix}"


def read_tuned(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchError(f"tuned settings {path}: unreadable ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("methods"), dict):
        raise BenchError(f"tuned settings {path}: not a tuned-settings file of schema {SCHEMA} "
                         f"(keys 'schema', 'methods' expected)")
    for m, entry in data["methods"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("chosen"), dict):
            raise BenchError(f"tuned settings {path}: key 'methods.{m}.chosen' must be a table of options")
    return data


def load_tuned(spec, encoder: str | None) -> tuple[dict[str, dict], Path | None, dict]:
    """``({method: chosen options}, path, file contents)`` of the stream's tuned settings; ``({}, None, {})``
    when there are none or they were tuned on another version of the stream file."""
    path = tuned_path(spec, encoder)
    if not path.is_file():
        return {}, None, {}
    data = read_tuned(path)
    if data.get("stream_sha256") != spec.sha256:
        print(f"warning: {path.name} was tuned on another version of stream file {spec.path.name} "
              f"(content {data.get('stream_sha256')} vs {spec.sha256}); not applied — rerun python -m bench.tune",
              file=sys.stderr)
        return {}, None, {}
    return {m: dict(e["chosen"]) for m, e in data["methods"].items()}, path, data


def warn_if_other_training(data: dict, path: Path | None, train: dict, loss: dict) -> None:
    """One warning line when the runs train differently from how the settings were tuned (still applied)."""
    if path is None:
        return
    diff = [k for k in train if data.get("train", {}).get(k) != train[k]]
    diff += [f"loss.{k}" for k in loss if data.get("loss", {}).get(k) != loss[k]]
    if diff:
        print(f"warning: {path.name} was tuned with other training settings ({', '.join(diff)}); applied anyway",
              file=sys.stderr)


def write_tuned(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps({"schema": SCHEMA, **data}, indent=1, sort_keys=False) + "\n")

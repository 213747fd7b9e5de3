"""Tuned settings: the options ``python -m bench.tune`` selected for each method on a stream (and encoder),
on validation pairs, with their provenance. ``bench.run`` applies them between the stream's own settings and
``--set``.

The file is named ``<stream>.tuned.json`` (``<stream>.tuned-<encoder>.json`` for a stream of feature banks).
For a user's stream file it sits beside that file. The built-in streams ship theirs inside the package, and
``bench.tune`` never writes there (from a wheel that would silently change every later run of the
installation): it writes to the user settings folder (``$CMCL_BENCH_SETTINGS``, default
``~/.config/cmcl-bench``) under ``tuned/``, which ``bench.run`` reads before the shipped file. The file records
the stream file's content hash; settings tuned on another version of the stream are not applied (one warning
line). Torch-free.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .errors import BenchError
from .files import write_atomic

SCHEMA = 1


def settings_dir() -> Path:
    """The user settings folder: where tuning a built-in stream writes, and what ``bench.run`` reads first."""
    return Path(os.environ.get("CMCL_BENCH_SETTINGS") or Path.home() / ".config" / "cmcl-bench")


def _name(spec, encoder: str | None) -> str:
    stem = spec.path.name.removesuffix(".toml")
    return stem + (f".tuned-{encoder}.json" if spec.bank_sources and encoder else ".tuned.json")


def is_builtin(spec) -> bool:
    from .streams import builtin_streams
    return spec.path.resolve() in {p.resolve() for p in builtin_streams().values()}


def shipped_path(spec, encoder: str | None) -> Path:
    """The file beside the stream file (for a built-in stream: the one shipped in the package)."""
    return spec.path.parent / _name(spec, encoder)


def tuned_path(spec, encoder: str | None) -> Path:
    """Where ``bench.tune`` writes by default: beside a user's stream file; for a built-in stream, in the user
    settings folder."""
    return settings_dir() / "tuned" / _name(spec, encoder) if is_builtin(spec) else shipped_path(spec, encoder)


def source_name(path: Path, spec) -> str:
    """How a run's ``option_sources`` names the file: its name when beside the stream file, else its path."""
    return path.name if path.parent.resolve() == spec.path.parent.resolve() else str(path)


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
    """``({method: chosen options}, path, file contents)`` of the stream's tuned settings — for a built-in
    stream the user settings folder's file if there is a current one, else the shipped one; ``({}, None, {})``
    when there are none or they were tuned on another version of the stream file."""
    for path in dict.fromkeys([tuned_path(spec, encoder), shipped_path(spec, encoder)]):
        if not path.is_file():
            continue
        data = read_tuned(path)
        if data.get("stream_sha256") != spec.sha256:
            print(f"warning: {path} was tuned on another version of stream file {spec.path.name} (content "
                  f"{data.get('stream_sha256')} vs {spec.sha256}); not applied — rerun python -m bench.tune",
                  file=sys.stderr)
            continue
        if path != shipped_path(spec, encoder):
            print(f"note: tuned settings from {path} (the user settings folder), not the shipped ones",
                  file=sys.stderr)
        return {m: dict(e["chosen"]) for m, e in data["methods"].items()}, path, data
    return {}, None, {}


def warn_if_other_training(data: dict, path: Path | None, train: dict, loss: dict) -> None:
    """One warning line when the runs train differently from how the settings were tuned (still applied)."""
    if path is None:
        return
    diff = [k for k in train if data.get("train", {}).get(k) != train[k]]
    diff += [f"loss.{k}" for k in loss if data.get("loss", {}).get(k) != loss[k]]
    if diff:
        print(f"warning: {path} was tuned with other training settings ({', '.join(diff)}); applied anyway",
              file=sys.stderr)


def _tuned_runs(where: dict) -> set[tuple[int, int]]:
    """The (seed, world) pairs a tuning ran on; a file that predates worlds, or counts them, ran 0..K-1."""
    worlds = where.get("worlds", 1)
    worlds = range(worlds) if isinstance(worlds, int) else worlds
    return {(int(s), int(w)) for s in where.get("seeds") or () for w in worlds}


def warn_if_tuned_on_reported(data: dict, path: Path | None, methods, seeds, worlds) -> None:
    """One warning line when these runs report a seed in a world that an applied method was tuned on: a
    choice fitted to those runs' noise flatters them (``bench.tune`` uses seeds and worlds of its own)."""
    if path is None:
        return
    reported = {(s, w) for s in seeds for w in worlds}
    hit = {m: reported & _tuned_runs(entry.get("tuned_by") or data) for m, entry in data["methods"].items()
           if m in methods}
    hit = {m: pairs for m, pairs in hit.items() if pairs}
    if hit:
        pairs = sorted(set().union(*hit.values()))
        shown = ", ".join(f"seed {s} world {w}" for s, w in pairs[:4]) + (", …" if len(pairs) > 4 else "")
        print(f"warning: {path} tuned {', '.join(hit)} on runs these runs report too ({shown}): the choice may fit "
              "their noise; retune with python -m bench.tune, whose seeds and worlds are its own", file=sys.stderr)


def write_tuned(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps({"schema": SCHEMA, **data}, indent=1, sort_keys=False) + "\n")

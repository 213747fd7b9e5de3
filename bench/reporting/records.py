"""Run records: the one module that builds, checks, writes and reads them (``<stream>/runs/<label>/seed<k>.json``).

``RunRecord`` is the schema, as types. ``build_record`` assembles a finished run's record (the runner hands
it what it measured) and checks it; ``read_run`` checks a file against the same schema. A record carries
``schema`` (its format version). Files written before versions existed (schema 0) are read and brought up to
date in memory; a file of an unknown, newer schema is refused with one line. Torch-free: ``python -m
bench.figures`` rebuilds everything from these files alone.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NotRequired, TypedDict, get_origin, get_type_hints, is_typeddict

from ..errors import BenchError
from ..files import write_atomic
from ..method_spec import role_from_order, role_rank

SCHEMA = 1


class TaskEntry(TypedDict):
    """One trained step (or probe), in training order: a column of the matrices."""

    name: str
    source: str
    modalities: list[str]
    metrics: list[str]           # recall, acc


class Timings(TypedDict):
    steps: list[dict]            # per step: train_seconds, iterations, the loss record (bench.trainer)
    train_seconds: float
    wall_seconds: float
    peak_rss_mb: NotRequired[float]
    peak_device_mb: NotRequired[float]


class RunRecord(TypedDict):
    """A run file's content. ``matrices[key][i][j]``: metric ``key`` on task j after training i steps (row 0:
    before training); ``summary``: ``bench.metrics.SUMMARY``'s values; ``config``: ``RunSpec.config()``, whose
    hash ``config_hash`` decides whether a finished run is skipped."""

    schema: NotRequired[int]     # stamped when written
    method: str
    label: NotRequired[str]      # a variant's row name
    seed: int
    stream: str                  # the results folder's name
    role: str                    # bench.method_spec.ROLES
    family: NotRequired[str]     # bench.method_spec.FAMILIES
    config: dict[str, Any]
    config_hash: str
    tasks: list[TaskEntry]
    matrices: dict[str, list[list[float | None]]]
    summary: dict[str, float | None]
    probes: NotRequired[list[TaskEntry]]
    probe_matrices: NotRequired[dict[str, list[list[float | None]]]]
    timings: Timings
    warnings: NotRequired[list[str]]
    method_state: NotRequired[dict[str, Any]]
    versions: NotRequired[dict[str, str]]
    banks: NotRequired[dict[str, Any]]   # streams of feature banks: which banks, made how
    budget: NotRequired[dict[str, int]]  # bench.budget: state_bytes, trainable_params
    within_step: NotRequired[dict[str, Any]]   # --eval-every: the old tasks' curves inside each step


def _json_type(hint) -> type:
    return dict if is_typeddict(hint) else (get_origin(hint) or hint)


def _required(typed) -> dict[str, type]:
    """The keys a TypedDict requires, with their JSON types (read from the hints: under postponed
    annotations ``__required_keys__`` does not see ``NotRequired``)."""
    hints = get_type_hints(typed, include_extras=True)
    return {k: _json_type(t) for k, t in hints.items() if get_origin(t) is not NotRequired}


# every key a record must hold, with its JSON type (checked when a record is built and when a file is read);
# schema 0 files have no role: it is checked after the upgrade
REQUIRED = {k: t for k, t in _required(RunRecord).items() if k != "role"}


def dumps(record: Mapping[str, Any]) -> str:
    """A record as JSON text; NaN and infinities are refused (they are not JSON, and no reader should meet
    them: an undefined value is null)."""
    return json.dumps({"schema": SCHEMA, **record}, indent=1, allow_nan=False) + "\n"


RunKey = tuple[int, int, int]


def run_key(run: dict) -> RunKey:
    """What identifies a run within its row: (seed, task order, world); order and world 0 are the stream
    file's own (records without them ran there)."""
    cfg = run.get("config", {})
    return run["seed"], int(cfg.get("order", 0)), int(cfg.get("world", 0))


def run_name(seed: int, order: int = 0, world: int = 0) -> str:
    """A run's name within its row: ``seed<k>``, with ``-order<i>`` / ``-world<j>`` when not the stream file's
    own order and world (0)."""
    return f"seed{seed}" + (f"-order{order}" if order else "") + (f"-world{world}" if world else "")


def relative_path(label: str, seed: int, order: int = 0, world: int = 0) -> Path:
    """Where a run's record lives in its results folder: the one name a run of this row, seed, task order and
    world may have."""
    return Path("runs") / label / f"{run_name(seed, order, world)}.json"


def run_text(seed: int, order: int = 0, world: int = 0) -> str:
    """``seed 3`` (``seed 3 order 1 world 2``): a run within its row, in messages."""
    return f"seed {seed}" + (f" order {order}" if order else "") + (f" world {world}" if world else "")


def write_run(path: Path, record: Mapping[str, Any]) -> None:
    """Write one run record atomically, stamped with the current schema."""
    write_atomic(path, dumps(record))


def _upgrade(data: dict) -> dict:
    """Schema 0 → 1: the alignment deviation's summary key was ``stability_dev``; the table position was a
    numeric ``order``."""
    summary = data["summary"]
    if "stability_dev" in summary and "align_dev" not in summary:
        summary["align_dev"] = summary.pop("stability_dev")
    if "role" not in data:
        data["role"] = role_from_order(int(data.get("order", 10)))
    timings = data["timings"]
    if "train_seconds" not in timings:       # early files kept it in the summary only
        steps = [s.get("train_seconds", 0.0) for s in timings.get("steps", []) if isinstance(s, dict)]
        timings["train_seconds"] = summary.get("train_seconds", sum(steps))
    data.pop("order", None)
    data["schema"] = SCHEMA
    return data


def build_record(run, tasks: list[TaskEntry], probes: list[TaskEntry], rows: list[dict], timings: list[dict],
                 wall_seconds: float, memory: dict, method_cls, method_state: dict, versions: dict,
                 warnings: list[str], banks: dict | None = None, budget: dict | None = None,
                 within: dict | None = None) -> RunRecord:
    """A finished run's record, checked: ``run`` its ``RunSpec``; ``rows`` the evaluations (row 0 before
    training, then one per step; each ``{metric: [value per task, then per probe]}``); ``timings`` the steps'
    timing records; ``memory`` the peak memory figures; ``within`` the within-step curves (``--eval-every``:
    ``{"every", "seconds", "steps": [{"step", "iterations", "r10", "align_dev"}]}``, each point a list over the
    step's old tasks)."""
    from ..metrics import summarize
    T = len(tasks)
    matrices = {k: [row[k][:T] for row in rows] for k in rows[0]}
    probe_matrices = {k: [row[k][T:] for row in rows] for k in rows[0] if k != "align_dev"}
    train_seconds = sum(t["train_seconds"] for t in timings)
    record: dict[str, Any] = {
        "method": run.method, **({"label": run.label} if run.label else {}), "seed": run.seed,
        "stream": run.result_name, "role": method_cls.role, "family": method_cls.family,
        "config": run.config(), "config_hash": run.hash, "tasks": tasks, "matrices": matrices,
        "summary": summarize(matrices, train_seconds, probe_matrices if probes else None, budget, within),
        **({"probes": probes, "probe_matrices": probe_matrices} if probes else {}),
        # a loss that overflowed is recorded as null (its step's warning says so): JSON has no infinity
        "timings": _finite_or_null({"steps": timings, "train_seconds": train_seconds, "wall_seconds": wall_seconds,
                                    **memory}),
        **({"warnings": warnings} if warnings else {}),
        "method_state": _finite_or_null(method_state), "versions": versions,
        **({"banks": banks} if banks is not None else {}),
        **({"budget": budget} if budget is not None else {}),
        **({"within_step": _finite_or_null(within)} if within is not None else {}),
    }
    check(record, f"the run record of {run.row} {run.run_text}")
    return record  # type: ignore[return-value]


def _finite_or_null(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value


def read_run(path: Path) -> dict:
    """One run record, validated; a one-line ``BenchError`` naming the file and the problem otherwise."""
    try:
        data = json.loads(Path(path).read_text(), parse_constant=_not_json)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchError(f"run file {path}: unreadable ({e.__class__.__name__}: {e})") from None
    except ValueError as e:
        raise BenchError(f"run file {path}: {e}") from None
    return check(data, f"run file {path}")


def _not_json(name: str):
    raise ValueError(f"holds {name}, which is not a JSON number (an undefined value is null)")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check(data, where: str) -> dict:
    """``data`` checked against the schema (and brought up to date from schema 0); a one-line ``BenchError``
    starting with ``where`` otherwise."""
    path = where
    if not isinstance(data, dict):
        raise BenchError(f"{path}: not a run record (a JSON object), got {type(data).__name__}")
    schema = data.get("schema", 0)
    if not isinstance(schema, int) or isinstance(schema, bool) or not 0 <= schema <= SCHEMA:
        raise BenchError(f"{path}: key 'schema' is {schema!r}; this version of cmcl-bench reads "
                         f"schemas 0 to {SCHEMA} (upgrade cmcl-bench to read it)")
    for key, kind in REQUIRED.items():
        if key not in data:
            raise BenchError(f"{path}: missing key {key!r}")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise BenchError(f"{path}: key {key!r} must be a JSON {_JSON[kind]}, got {str(data[key])[:40]!r}")
    if schema < SCHEMA:
        data = _upgrade(data)
    for key in ("role", "label", "family"):
        if (key == "role" or key in data) and not isinstance(data.get(key), str):
            raise BenchError(f"{path}: key {key!r} must be a JSON string, got {str(data.get(key))[:40]!r}")
    n = len(data["tasks"])
    for key in MATRICES:
        _check_matrix(data["matrices"].get(key), n, f"{path}: key 'matrices.{key}'")
    probes = data.get("probe_matrices")
    if probes is not None:
        if not isinstance(probes, dict) or not isinstance(data.get("probes"), list):
            raise BenchError(f"{path}: keys 'probes' and 'probe_matrices' must be a JSON array and object")
        for key, m in probes.items():
            _check_matrix(m, len(data["probes"]), f"{path}: key 'probe_matrices.{key}'", rows=n + 1)
    train_seconds = data["timings"].get("train_seconds")
    if not _number(train_seconds):
        raise BenchError(f"{path}: key 'timings.train_seconds' must be a finite number, got {train_seconds!r}")
    if "within_step" in data:
        _check_within(data["within_step"], n, f"{path}: key 'within_step'")
    _check_summary(data, path)
    return data


def _check_within(w, n: int, where: str) -> None:
    """The within-step curves: per step, as many points as iterations, each point one value (or null) per old
    task of that step."""
    if not isinstance(w, dict) or not isinstance(w.get("steps"), list):
        raise BenchError(f"{where} must be an object with a 'steps' array, got {str(w)[:40]!r}")
    for c in w["steps"]:
        step = c.get("step") if isinstance(c, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or not 0 < step < n:
            raise BenchError(f"{where}: a curve's 'step' must be a step with old tasks (1 to {n - 1}), got "
                             f"{str(step)[:40]!r}")
        its = c.get("iterations")
        if not isinstance(its, list) or not its:
            raise BenchError(f"{where}: step {step}'s 'iterations' must be a non-empty array")
        for key in ("r10", "align_dev"):
            pts = c.get(key)
            if (not isinstance(pts, list) or len(pts) != len(its)
                    or any(not isinstance(pt, list) or len(pt) != step for pt in pts)
                    or any(v is not None and not _number(v) for pt in pts for v in pt)):
                raise BenchError(f"{where}: step {step}'s {key!r} must be {len(its)} points of {step} values "
                                 "(finite numbers or null), one per old task")


def _check_matrix(m, n: int, where: str, rows: int | None = None) -> None:
    """``rows`` (n + 1) rows of ``n`` cells, each a finite number or null (undefined)."""
    rows = n + 1 if rows is None else rows
    if not isinstance(m, list) or len(m) != rows or any(not isinstance(r, list) or len(r) != n for r in m):
        raise BenchError(f"{where} must be {rows} rows of {n} values (one per task), got {str(m)[:40]!r}")
    for i, row in enumerate(m):
        for j, v in enumerate(row):
            if v is not None and not _number(v):
                raise BenchError(f"{where} row {i} column {j} is {v!r}: cells are finite numbers or null")


def _check_summary(data: dict, path: str) -> None:
    """Every summary value is what the run's matrices give (``bench.metrics.summarize``): the tables average
    the summaries, so a value edited away from its matrix — a null, a string, another number — would be a
    silently wrong cell. A metric the file lacks (written before it existed) is filled in from the matrices."""
    from ..metrics import summarize
    summary = data["summary"]
    expected = summarize(data["matrices"], data["timings"]["train_seconds"], data.get("probe_matrices"),
                         data.get("budget"), data.get("within_step"))
    for key, want in expected.items():
        got = summary.setdefault(key, want)
        same = (got is None and want is None) or (
            _number(got) and want is not None and abs(got - want) <= 1e-9 * max(1.0, abs(want)))
        if not same:
            raise BenchError(f"{path}: key 'summary.{key}' is {str(got)[:40]!r} but its matrices give "
                             f"{want if want is None else round(want, 6)!r} (edited, or written by other metric "
                             "code); rerun it with --force or remove the file")


# the metric matrices every run holds (the summary and the figures read them)
MATRICES = ("r1", "r5", "r10", "acc", "align_dev")


_JSON = {str: "string", int: "integer", dict: "object", list: "array"}


def label(run: dict) -> str:
    """The row a run belongs to: its method (and, for variants, its label)."""
    return run.get("label", run["method"])


def load_runs(stream_dir: Path, labels: list[str] | None = None) -> list[dict]:
    """The run records of one results folder (optionally only some rows); runs of two different stream files
    (same name, different content) are never mixed into one table: that is an error naming both. A file is
    a run only under its own name (``relative_path``): a stray copy (``seed00.json``, ``seedx.json``,
    another row's folder) would count its run twice, so it is refused with one line."""
    runs, shas = [], {}  # type: list[dict], dict[Any, Path]
    stream_dir = Path(stream_dir)
    for p in sorted((stream_dir / "runs").glob("*/seed*.json")):
        run = read_run(p)
        own = relative_path(label(run), *run_key(run))
        if p.relative_to(stream_dir) != own:
            raise BenchError(f"run file {p}: records {label(run)} {run_text(*run_key(run))}, whose file is "
                             f"{stream_dir / own} (a copy? remove it, or rename it if it is the only one)")
        shas.setdefault(run["config"].get("stream_sha256"), p)
        if labels is None or label(run) in labels:
            runs.append(run)
    if len(shas) > 1:
        (a, pa), (b, pb) = list(shas.items())[:2]
        raise BenchError(f"{stream_dir}: runs of different stream files share this folder ({pa} from content {a}, "
                         f"{pb} from content {b}); move one set to another folder")
    return runs


def stream_files_of(stream_dir: Path) -> set:
    """The stream-file content hashes of the runs in a results folder."""
    out = set()
    for p in (Path(stream_dir) / "runs").glob("*/seed*.json"):
        try:
            out.add(read_run(p)["config"].get("stream_sha256"))
        except BenchError:
            pass                    # an unreadable file is rerun, never trusted
    return out


def row_order(runs: list[dict]) -> list[str]:
    """Stable table order: by role (lower reference, naive, baselines, proposed, upper reference), then method,
    then its variants by their option values (numbers as numbers: 100 before 1000 before 10000)."""
    roles = roles_of(runs)
    methods = {label(r): r["method"] for r in runs}
    return sorted(roles, key=lambda m: (role_rank(roles[m]), methods[m], m != methods[m], _variant_key(m)))


def _variant_key(lab: str) -> tuple:
    """``dns[lambda_min=0.001,x=a]`` → ((lambda_min, (0, 0.001)), (x, (1, 'a'))): numbers compare as numbers."""
    inside = lab[lab.find("[") + 1:-1] if lab.endswith("]") and "[" in lab else lab
    key = []
    for part in inside.split(","):
        k, _, v = part.partition("=")
        try:
            key.append((k, (0, float(v), "")))
        except ValueError:
            key.append((k, (1, 0.0, v)))
    return tuple(key)


def untuned_rows(runs: list[dict]) -> set[str]:
    """Rows that ran at their defaults on a stream with tuned settings (``config.tuned`` false)."""
    return {label(r) for r in runs if r["config"].get("tuned") is False}


def roles_of(runs: list[dict]) -> dict[str, str]:
    roles: dict[str, str] = {}
    for r in runs:
        roles.setdefault(label(r), r["role"])
    return roles

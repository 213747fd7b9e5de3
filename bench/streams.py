"""Stream specs: ``datasets/<name>.toml`` files (or any path) naming sources, steps and metrics.

A spec is declarative. Each step names a source, the pair of modalities it trains, and the test metrics it
reports (``recall``, ``acc``). Each source is simulated (``kind = "simulated"``, generator parameters in
the file, see ``bench.simulate``) or a feature bank on disk (``kind = "bank"``, see ``bench.features.bank``), read
for the encoder chosen at run time (``--encoder``).
"""
from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BenchError
from .files import check_name

# The built-in stream files: the top-level datasets/ folder of a checkout (or an editable install), shipped in
# a wheel as the data package bench.streamspecs (pyproject.toml maps one onto the other).
CHECKOUT_STREAMS = Path(__file__).resolve().parent.parent / "datasets"
METRICS = ("recall", "acc")
MODALITY_ORDER = ("vision", "text", "audio", "thermal", "depth", "imu", "video", "tactile", "point")


@dataclass(frozen=True)
class Step:
    index: int           # 0-based position in the stream
    source: str
    pair: tuple[str, str]
    metrics: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.source}:{self.pair[0]}-{self.pair[1]}"


@dataclass
class StreamSpec:
    name: str
    path: Path
    description: str
    steps: list[Step]
    sources: dict[str, dict]
    simulation: dict = field(default_factory=dict)
    modalities: dict[str, dict] = field(default_factory=dict)
    train: dict = field(default_factory=dict)     # training defaults of this stream (CLI flags override)
    encoders: dict[str, int] = field(default_factory=dict)   # expected feature width per known encoder
    head_dim: int | None = None      # width of the joint space (default: the widest input)
    probes: list[Step] = field(default_factory=list)   # evaluation-only pairs (emergent alignment), never trained
    # per-encoder settings: {encoder: {"train": {...}, method: {option: value}}}, applied with --encoder
    settings: dict[str, dict] = field(default_factory=dict)
    sha256: str = ""     # of the file's bytes as loaded: what ran, even if the file changes during a sweep

    @property
    def bank_sources(self) -> list[str]:
        return [s for s, src in self.sources.items() if src.get("kind", "simulated") == "bank"]

    @property
    def modality_names(self) -> list[str]:
        return sorted({m for s in self.steps for m in s.pair})

    def simulated_bytes(self) -> int:
        """About the memory simulating this stream's features takes at its peak: every simulated source's
        pairs and class texts, each modality a dim-wide row, in float64 while they are made (then float32)."""
        dim = {**SIM_DEFAULTS, **self.simulation}["dim"]
        rows = sum((src["train"] + src["test"]) * len(src["modalities"]) + src["classes"]
                   for name, src in self.sources.items() if name not in self.bank_sources)
        return rows * dim * (8 + 4)


def builtin_streams() -> dict[str, Path]:
    """name -> file of every built-in stream: read from the installed ``bench.streamspecs`` data package,
    else (a checkout, an editable install) from the repository's ``datasets/`` folder."""
    import importlib.resources
    import importlib.util
    if importlib.util.find_spec("bench.streamspecs") is not None:
        files = [Path(str(p)) for p in importlib.resources.files("bench.streamspecs").iterdir()]
    else:
        files = list(CHECKOUT_STREAMS.glob("*.toml"))
    return {p.stem: p for p in sorted(files) if p.suffix == ".toml"}


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    streams = builtin_streams()
    if p.suffix == ".toml" or "/" in name_or_path or name_or_path not in streams and p.exists():
        if p.is_dir():
            raise BenchError(f"--stream {p} is a folder, not a stream file (.toml)")
        if not p.is_file():
            raise BenchError(f"stream file {p} does not exist")
        return p
    if name_or_path not in streams:
        from .describe import did_you_mean
        raise BenchError(f"unknown stream {name_or_path!r};{did_you_mean(name_or_path, streams)} built-in streams: "
                         f"{', '.join(streams) or 'none'} "
                         f"(or pass the path of a .toml file)")
    return streams[name_or_path]


def _check_keys(where: str, table: dict, allowed: set[str]):
    extra = sorted(set(table) - allowed)
    if extra:
        raise BenchError(f"{where}: unknown key {extra[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _req(where: str, table: dict, key: str, kind, what: str):
    if key not in table:
        raise BenchError(f"{where}: missing key {key!r} ({what})")
    val = table[key]
    if not isinstance(val, kind) or isinstance(val, bool) and kind is not bool:
        raise BenchError(f"{where}: key {key!r} must be {what}, got {val!r}")
    return val


SOURCE_KEYS = {"kind", "modalities", "classes", "train", "test", "class_texts", "texts", "domain_shift",
               "class_spread", "instance_spread"}
BANK_SOURCE_KEYS = {"kind", "modalities", "bank", "class_texts"}
SIM_KEYS = {"seed", "dim", "common_dim", "specific_dim", "floor_noise", "domain_shift", "class_spread",
            "instance_spread"}
MODALITY_KEYS = {"misalignment", "noise", "offset"}
SIM_DEFAULTS = dict(seed=0, dim=128, common_dim=16, specific_dim=16, floor_noise=0.02, domain_shift=0.5,
                    class_spread=1.0, instance_spread=0.6)


def _int_in(lo, hi):
    return (f"an integer in [{lo}, {hi}]",
            lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi)


_NONNEG = ("a finite number >= 0",
           lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0)
# The constraint on each simulation value, written once (what it must be, test); checked when the file loads.
SIM_RULES = {"seed": _int_in(0, 2 ** 62), "dim": _int_in(2, 16_384), "common_dim": _int_in(0, 16_384),
             "specific_dim": _int_in(1, 16_384), "floor_noise": _NONNEG, "domain_shift": _NONNEG,
             "class_spread": _NONNEG, "instance_spread": _NONNEG}
MODALITY_RULES = {"misalignment": _NONNEG, "noise": _NONNEG, "offset": _NONNEG}
SOURCE_RULES = {"domain_shift": _NONNEG, "class_spread": _NONNEG, "instance_spread": _NONNEG,
                "classes": _int_in(1, 100_000), "train": _int_in(1, 1_000_000), "test": _int_in(1, 1_000_000),
                "class_texts": ("true or false", lambda v: isinstance(v, bool)),
                "texts": ("'instance' or 'class-name'", lambda v: v in ("instance", "class-name"))}


def _check_values(where: str, table: dict, rules: dict) -> None:
    for key, (what, ok) in rules.items():
        if key in table and not ok(table[key]):
            raise BenchError(f"{where}: key {key!r} must be {what}, got {table[key]!r}")
TRAIN_KEYS = {"epochs": int, "batch_size": int, "lr": float, "weight_decay": float, "optimizer": str,
              "schedule": str, "clip_grad_norm": float, "decay_bias": bool}


def _train_table(where: str, train) -> dict:
    if not isinstance(train, dict):
        raise BenchError(f"{where} must be a table")
    _check_keys(where, train, set(TRAIN_KEYS))
    for key, kind in TRAIN_KEYS.items():
        if key in train and (not isinstance(train[key], (int, float) if kind is float else kind)
                             or (isinstance(train[key], bool) and kind is not bool)):
            raise BenchError(f"{where}: key {key!r} must be a {kind.__name__}, got {train[key]!r}")
    from .config import train_problem  # the one statement of each setting's constraint
    for key, value in train.items():
        problem = train_problem(key, float(value) if TRAIN_KEYS[key] is float else value)
        if problem:
            raise BenchError(f"{where}: key {key!r} {problem}")
    return train


def load(name_or_path: str) -> StreamSpec:
    path = resolve(name_or_path)
    try:
        content = path.read_bytes()
        raw = tomllib.loads(content.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BenchError(f"stream file {path}: not valid TOML ({e})") from None
    where = f"stream file {path}"
    _check_keys(where, raw, {"name", "description", "simulation", "modalities", "sources", "steps", "train",
                             "encoders", "heads", "probes", "settings"})
    heads = raw.get("heads", {})
    if not isinstance(heads, dict):
        raise BenchError(f"{where}: [heads] must be a table")
    _check_keys(f"{where} [heads]", heads, {"dim"})
    if "dim" in heads and (not isinstance(heads["dim"], int) or isinstance(heads["dim"], bool) or heads["dim"] < 1):
        raise BenchError(f"{where} [heads]: key 'dim' must be a positive integer, got {heads['dim']!r}")
    encoders = raw.get("encoders", {})
    if not isinstance(encoders, dict) or not all(isinstance(v, int) and v > 0 for v in encoders.values()):
        raise BenchError(f"{where}: [encoders] must map encoder names to positive feature widths")
    train = _train_table(f"{where} [train]", raw.get("train", {}))
    settings = raw.get("settings", {})
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise BenchError(f"{where}: [settings] must hold one table per encoder ([settings.<encoder>])")
    for enc, table in settings.items():
        if "train" in table:
            _train_table(f"{where} [settings.{enc}.train]", table["train"])
        for method, opts in table.items():
            if not isinstance(opts, dict):
                raise BenchError(f"{where} [settings.{enc}]: key {method!r} must be a table of options")
    name = raw.get("name", path.stem)
    check_name(name, f"{where}: key 'name'")
    sim = raw.get("simulation", {})
    if not isinstance(sim, dict):
        raise BenchError(f"{where}: [simulation] must be a table")
    _check_keys(f"{where} [simulation]", sim, SIM_KEYS)
    _check_values(f"{where} [simulation]", sim, SIM_RULES)
    full = {**SIM_DEFAULTS, **sim}
    if full["common_dim"] + full["specific_dim"] > full["dim"]:
        raise BenchError(f"{where} [simulation]: common_dim + specific_dim ({full['common_dim']} + "
                         f"{full['specific_dim']}) must not exceed dim ({full['dim']})")
    mods = raw.get("modalities", {})
    if not isinstance(mods, dict):
        raise BenchError(f"{where}: [modalities] must be a table")
    for m, t in mods.items():
        if not isinstance(t, dict):
            raise BenchError(f"{where} [modalities.{m}]: must be a table")
        _check_keys(f"{where} [modalities.{m}]", t, MODALITY_KEYS)
        _check_values(f"{where} [modalities.{m}]", t, MODALITY_RULES)
    sources = raw.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise BenchError(f"{where}: needs at least one [sources.<name>] table")
    for sname, src in sources.items():
        w = f"{where} [sources.{sname}]"
        if not isinstance(src, dict):
            raise BenchError(f"{w}: must be a table")
        kind = src.get("kind", "simulated")
        if kind not in ("simulated", "bank"):
            raise BenchError(f"{w}: kind {kind!r} is not supported (supported: 'simulated', 'bank')")
        _check_keys(w, src, SOURCE_KEYS if kind == "simulated" else BANK_SOURCE_KEYS)
        ms = _req(w, src, "modalities", list, "a list of modality names")
        if len(ms) < 2 or len(set(ms)) != len(ms) or not all(isinstance(m, str) for m in ms):
            raise BenchError(f"{w}: 'modalities' must list at least two distinct modality names")
        if kind == "bank":
            check_name(src.get("bank", sname), f"{w}: 'bank' (a file-name stem)")
            continue
        for m in ms:
            if m not in mods:
                raise BenchError(f"{w}: modality {m!r} has no [modalities.{m}] table")
        for key in ("classes", "train", "test"):
            _req(w, src, key, int, "a positive integer")
        _check_values(w, src, SOURCE_RULES)
        if src["test"] < 10:
            raise BenchError(f"{w}: 'test' must be at least 10 (Recall@10 needs 10 candidates)")
        if src.get("texts") == "class-name" and ("text" not in ms or src.get("class_texts") is False):
            raise BenchError(f"{w}: texts = 'class-name' needs a 'text' modality and class texts")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise BenchError(f"{where}: needs at least one [[steps]] entry")
    steps = [_step(where, f"steps[{i}]", i, st, sources) for i, st in enumerate(steps_raw)]
    probes_raw = raw.get("probes", [])
    if not isinstance(probes_raw, list):
        raise BenchError(f"{where}: 'probes' must be an array of tables ([[probes]])")
    probes = [_step(where, f"probes[{i}]", i, st, sources) for i, st in enumerate(probes_raw)]
    names = [s.name for s in steps] + [p.name for p in probes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise BenchError(f"{where}: step or probe {sorted(dup)[0]!r} appears twice")
    return StreamSpec(name=name, path=path, description=raw.get("description", ""), steps=steps, sources=sources,
                      simulation=sim, modalities=mods, train=train, encoders=encoders,
                      head_dim=heads.get("dim"), probes=probes, settings=settings,
                      sha256=hashlib.sha256(content).hexdigest()[:16])


def _step(where: str, label: str, i: int, st, sources: dict) -> Step:
    w = f"{where} {label}"
    if not isinstance(st, dict):
        raise BenchError(f"{w}: must be a table")
    _check_keys(w, st, {"source", "pair", "metrics"})
    src = _req(w, st, "source", str, "a source name")
    if src not in sources:
        raise BenchError(f"{w}: unknown source {src!r} (sources: {', '.join(sources)})")
    pair = _req(w, st, "pair", list, "a list of two modality names")
    if len(pair) != 2 or pair[0] == pair[1]:
        raise BenchError(f"{w}: 'pair' must name two different modalities, got {pair!r}")
    for m in pair:
        if m not in sources[src]["modalities"]:
            raise BenchError(f"{w}: source {src!r} has no modality {m!r} (it has {', '.join(sources[src]['modalities'])})")
    metrics = st.get("metrics", ["recall"])
    if not isinstance(metrics, list) or not metrics or any(m not in METRICS for m in metrics):
        raise BenchError(f"{w}: 'metrics' must be a non-empty list from {', '.join(METRICS)}, got {metrics!r}")
    if "acc" in metrics and ("text" not in pair or not sources[src].get("class_texts", "text" in sources[src]["modalities"])):
        raise BenchError(f"{w}: metric 'acc' needs 'text' in the pair and class texts in source {src!r}")
    return Step(i, src, (pair[0], pair[1]), tuple(metrics))

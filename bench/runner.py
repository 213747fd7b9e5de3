"""One run = one stream × one method × one seed: build, train step by step, evaluate, return the run JSON.

The runner owns seeds, device and threads; methods never read the CLI.
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

import methods as method_registry

from .errors import BenchError
from .evaluate import Evaluator
from .heads import Heads
from .loss import LossConfig
from .results import config_hash, summarize
from .scenario import Scenario, build
from .simulate import simulate
from .streams import StreamSpec
from .trainer import TrainConfig, Trainer

EVAL_DEFAULTS = dict(n_pairs=1000, repeats=5, align_pairs=256)
_SCENARIOS: dict[tuple, Scenario] = {}


def stream_hash(spec: StreamSpec) -> str:
    import hashlib
    return hashlib.sha256(spec.path.read_bytes()).hexdigest()[:16]


def result_name(spec: StreamSpec, encoder: str | None) -> str:
    """Folder and label of a stream's results: the stream name, plus the encoder for banks."""
    return f"{spec.name}-{encoder}" if spec.bank_sources and encoder else spec.name


def get_scenario(spec: StreamSpec, encoder: str | None = None, banks: str | Path = "features") -> Scenario:
    """Built once per process, stream file content and encoder (the features are the same for every run)."""
    key = (str(spec.path), stream_hash(spec), encoder if spec.bank_sources else None, str(banks))
    if key not in _SCENARIOS:
        from .bank import load_stream_banks
        disk, shas = load_stream_banks(spec, encoder, banks)
        scenario = build(spec, {**simulate(spec), **disk})
        scenario.bank_shas = shas
        _SCENARIOS[key] = scenario
    return _SCENARIOS[key]


def run_config(spec: StreamSpec, method: str, params: dict, train: TrainConfig, loss: LossConfig,
               device: str, eval_cfg: dict | None = None, encoder: str | None = None,
               bank_shas: dict | None = None) -> dict:
    cfg = {"stream": spec.name, "stream_sha256": stream_hash(spec), "method": method, "method_params": params,
           "train": asdict(train), "loss": asdict(loss), "eval": dict(EVAL_DEFAULTS, **(eval_cfg or {})),
           "device": device}
    if spec.bank_sources:
        cfg["encoder"], cfg["banks_sha256"] = encoder, bank_shas or {}
    return cfg


def versions() -> dict:
    import numpy
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "platform": platform.platform()}
    try:
        from importlib.metadata import version
        out["avalanche-lib"] = version("avalanche-lib")
        out["cmcl-bench"] = version("cmcl-bench")
    except Exception:  # pragma: no cover - not installed as a distribution
        pass
    return out


def run_one(spec: StreamSpec, method: str, overrides: dict, seed: int, train: TrainConfig, loss: LossConfig,
            device: str = "cpu", eval_cfg: dict | None = None, progress=None, encoder: str | None = None,
            banks: str | Path = "features") -> dict:
    torch.manual_seed(seed)
    scenario = get_scenario(spec, encoder, banks)
    m = method_registry.get(method)(**overrides)
    config = run_config(spec, method, m.params, train, loss, device, eval_cfg, encoder, scenario.bank_shas)
    heads = Heads(scenario.in_dims, out_dim=scenario.head_dim, seed=seed).to(device)
    trainer = Trainer(scenario, m, heads, train, loss, seed, device)
    evaluator = Evaluator(scenario.tasks, seed, **config["eval"], probes=scenario.probes)
    t_start = time.perf_counter()
    rows = [evaluator.evaluate(heads, learned=0)]
    timings = []
    for step in range(len(scenario.tasks)):
        timings.append(trainer.train_experience(step))
        if not all(torch.isfinite(p).all() for p in heads.parameters()):
            raise BenchError(f"{method} seed {seed}: training diverged in step {step + 1} "
                             f"({scenario.tasks[step].name}): non-finite head weights; lower --lr")
        rows.append(evaluator.evaluate(heads, learned=step + 1))
        if progress is not None:
            progress(step + 1, len(scenario.tasks))
    T = len(scenario.tasks)
    matrices = {k: [row[k][:T] for row in rows] for k in rows[0]}
    probes = {k: [row[k][T:] for row in rows] for k in rows[0] if k != "align_dev"}
    train_seconds = sum(t["train_seconds"] for t in timings)
    return {
        "method": method, "seed": seed, "stream": result_name(spec, encoder), "order": type(m).order,
        "config": config, "config_hash": config_hash(config),
        "tasks": [{"name": t.name, "source": t.step.source, "modalities": list(t.pair), "metrics": list(t.metrics)}
                  for t in scenario.tasks],
        "matrices": matrices,
        "summary": summarize(matrices, train_seconds, probes if scenario.probes else None),
        **({"probes": [{"name": p.name, "source": p.step.source, "modalities": list(p.pair),
                        "metrics": list(p.metrics)} for p in scenario.probes],
            "probe_matrices": probes} if scenario.probes else {}),
        "timings": {"steps": timings, "train_seconds": train_seconds,
                    "wall_seconds": time.perf_counter() - t_start},
        "method_state": m.state_summary(),
        "versions": versions(),
    }

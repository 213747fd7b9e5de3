"""--log: the loss per epoch and the evaluations of every run, through Avalanche's loggers."""
import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from bench.run import main

ARGS = ["--stream", "toy", "--methods", "dns", "--seeds", "1", "--epochs", "2", "--no-figures"]


def test_csv_and_tensorboard_logs_hold_the_run_files_losses_and_evaluations(tmp_path):
    assert main(ARGS + ["--out", str(tmp_path), "--log", "csv,tensorboard"]) == 0
    rec = json.loads((tmp_path / "toy" / "runs" / "dns" / "seed0.json").read_text())
    folder = tmp_path / "toy" / "logs" / "dns" / "seed0"
    rows = list(csv.DictReader(open(folder / "metrics.csv")))
    losses = [v for s in rec["timings"]["steps"] for v in s.get("loss", ())]
    logged = [float(r["value"]) for r in rows if r["name"] == "train/loss"]
    assert logged == pytest.approx(losses) and len(logged) == 2 * len(rec["tasks"])
    xs = [int(r["x"]) for r in rows]
    assert xs == sorted(xs)                                       # one increasing counter (W&B needs it)
    r10 = [float(r["value"]) for r in rows if r["name"] == "eval/r10_seen"]
    seen = [sum(v for v in row[:t] if v is not None) / len([v for v in row[:t] if v is not None])
            for t, row in enumerate(rec["matrices"]["r10"][1:], start=1) if any(v is not None for v in row[:t])]
    assert r10 == pytest.approx(seen)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = EventAccumulator(str(folder / "tensorboard"))
    ev.Reload()
    assert [e.value for e in ev.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)
    assert len(ev.Scalars("eval/r10_seen")) == len(r10)


def test_an_unknown_logger_is_a_one_line_error(tmp_path, capsys):
    assert main(ARGS + ["--out", str(tmp_path), "--log", "csv,mlflow"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown logger 'mlflow'" in err and not (tmp_path / "toy").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_runs_offline_without_asking(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(HOME=str(tmp_path), HF_HUB_OFFLINE="1")           # no stored login, no WANDB_MODE: offline anyway
    r = subprocess.run([sys.executable, "-m", "bench.run", *ARGS, "--out", str(tmp_path), "--log", "wandb"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "toy" / "logs" / "dns" / "seed0" / "wandb").glob("offline-run-*"))

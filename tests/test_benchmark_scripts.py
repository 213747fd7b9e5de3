"""Every script in benchmarks/ runs to its end with tiny settings, so none can rot unnoticed (the README cites
their figures). Their numbers are not checked here: timings belong to the scripts, not to tests."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _script(args, tmp_path, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    r = subprocess.run([sys.executable, str(BENCH / args[0]), *args[1:]], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.parametrize("args, expect", [
    (["trainer_overhead.py", "--repeats", "1", "--dims", "32", "--iterations", "4"], "final weights identical"),
    (["method_cost.py", "--stream", "toy", "--steps", "1", "--repeats", "1", "--methods", "vanilla,l2"], "× vanilla"),
    (["projection_cost.py", "--dim", "32", "--rank", "8", "--batch", "8", "--iters", "2", "--repeats", "1"], "GEMM"),
    (["paper_scale.py", "--banks", "banks", "--dim", "32", "--train", "64", "--test", "32", "--rank", "8",
      "--epochs", "1", "--methods", "vanilla", "--devices", "cpu"], "it/s"),
])
def test_benchmark_script_runs_tiny(args, expect, tmp_path):
    assert expect in _script(args, tmp_path)


def test_official_speed_runs_our_sides(tmp_path):
    """Without a checkout of the official code (never shipped), its own sides on its generated features."""
    spec = importlib.util.spec_from_file_location("official_speed", BENCH / "official_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.make_data(tmp_path, 32, 64)
    for side in ("ours", "vanilla"):
        out = _script(["official_speed.py", "--side", side, "--work", str(tmp_path)], tmp_path)
        assert float(out.strip().splitlines()[-1]) > 0


def test_default_run_compares_two_checkouts(tmp_path):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("benchmarks/default_run.py needs this checkout's git history")
    out = _script(["default_run.py", "--base", "HEAD", "--keep", str(tmp_path / "work"), "--args",
                   "--stream toy --methods vanilla --seeds 1 --epochs 1 --no-figures"], tmp_path, timeout=600)
    assert "1 of 1 identical" in out

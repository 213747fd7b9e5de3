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
    (["trainer_overhead.py", "--repeats", "1", "--dims", "32", "--iterations", "4"], "final weights agree to"),
    (["method_cost.py", "--stream", "toy", "--steps", "1", "--repeats", "1", "--methods", "vanilla,l2"], "× vanilla"),
    (["projection_cost.py", "--dim", "32", "--rank", "8", "--batch", "8", "--iters", "2", "--repeats", "1"], "GEMM"),
    (["paper_scale.py", "--banks", "banks", "--dim", "32", "--train", "64", "--test", "32", "--rank", "8",
      "--epochs", "1", "--methods", "vanilla", "--devices", "cpu"], "it/s"),
    (["gpu_check.py", "--dry-run", "--jobs", "1,2", "--methods", "vanilla,dns"], "runs/hour"),
])
def test_benchmark_script_runs_tiny(args, expect, tmp_path):
    assert expect in _script(args, tmp_path)


def test_official_speed_runs_our_sides(tmp_path):
    """Without a checkout of the official code (never shipped), its own sides on its generated features."""
    mod = _load("official_speed")
    mod.make_data(tmp_path, 32, 64)
    for side in ("ours", "vanilla"):
        out = _script(["official_speed.py", "--side", side, "--work", str(tmp_path)], tmp_path)
        assert float(out.strip().splitlines()[-1]) > 0


def test_default_run_compares_two_checkouts(tmp_path):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("benchmarks/default_run.py needs this checkout's git history")
    out = _script(["default_run.py", "--base", "HEAD", "--reference", "HEAD", "--keep", str(tmp_path / "work"),
                   "--args", "--stream toy --methods vanilla --seeds 1 --epochs 1 --no-figures"], tmp_path, timeout=600)
    assert "1 of 1 identical to HEAD's" in out
    assert "below 0.05: yes" in out


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rounding_tolerance_is_a_fraction_of_each_methods_seed_to_seed_std():
    """default_run.drift: |Δ of a method's mean| / its run-to-run std in the reference; where the std is 0,
    the floor 1e-4 absolute. Qualities only (a time may move)."""
    drift = _load("default_run").drift
    def runs(r10s, accs, secs):
        return {f"s/runs/m/seed{i}.json": {"summary": {"r10": r, "acc": a, "train_seconds": t}}
                for i, (r, a, t) in enumerate(zip(r10s, accs, secs))}
    ref = runs([50.0, 51.0, 52.0], [70.0, 70.0, 70.0], [1, 2, 3])       # r10 std 1.0, acc std 0
    moved = drift(runs([50.04, 51.0, 52.0], [70.0, 70.0, 70.0], [9, 9, 9]), ref)
    assert moved[0][1:3] == ("s/m", "r10") and moved[0][0] == pytest.approx(0.04 / 3)
    assert {k for _, _, k, _, _ in moved} == {"r10", "acc"}                # not the training time
    assert drift(runs([50.0, 51.0, 52.0], [70.00006] * 3, [1, 2, 3]), ref)[0][0] == pytest.approx(0.03)
    assert drift(runs([50.0, 51.0, 52.0], [70.0002] * 3, [1, 2, 3]), ref)[0][0] == pytest.approx(0.1)
    assert drift(runs([50.2, 51.0, 52.0], [70.0] * 3, [1, 2, 3]), ref)[0][0] == pytest.approx(0.2 / 3)


def test_gpu_check_counts_host_reads_per_iteration(tmp_path):
    """gpu_check's count of host reads: none per iteration for vanilla, about one for A-GEM (the sign of its
    dot product, by design), from the difference between two and one epochs per step."""
    gpu_check = _load("gpu_check")
    banks = tmp_path / "banks"
    tiny = gpu_check.TINY
    gpu_check.write_banks(banks, tiny["dim"], tiny["train"], tiny["test"], tiny["rank"])
    per_iteration = {}
    for method in ("vanilla", "agem"):
        (r1, c1), (r2, c2) = (gpu_check.one_run(method, banks, "cpu", e) for e in (1, 2))
        its = [sum(s["iterations"] for s in r["timings"]["steps"]) for r in (r1, r2)]
        per_iteration[method] = (c2 - c1) / (its[1] - its[0])
    assert per_iteration["vanilla"] == 0
    assert 0.5 < per_iteration["agem"] <= 1


def test_ray_cost_runs_tiny(tmp_path):
    pytest.importorskip("ray", reason="benchmarks/ray_cost.py needs the optional extra: pip install 'cmcl-bench[ray]'")
    out = _script(["ray_cost.py", "--repeats", "1", "--jobs", "1", "--args",
                   "--stream toy --methods vanilla --seeds 1 --epochs 1"], tmp_path)
    assert "Ray / local" in out and "run files equal: yes" in out

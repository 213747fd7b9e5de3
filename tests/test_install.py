"""The suite runs from a real (non-editable) install: build the wheel, install it without dependencies into a
temporary folder, and run the CLI from another working directory, so nothing can come from this checkout."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy, so the checkout gets no build/ or *.egg-info
    src = tmp / "src"
    top = {".git", "build", "results", "features", ".pytest_cache", ".ruff_cache"}    # the checkout's, not bench/features
    shutil.copytree(ROOT, src, ignore=lambda d, names: [n for n in names if n == "__pycache__" or n.endswith(".egg-info")
                                                        or (Path(d) == ROOT and n in top)])
    # no build isolation: the build needs only setuptools, which is here (no network at test time)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True)
    if r.returncode != 0 and "No module named pip" in r.stderr:
        pytest.skip("pip is not available to build the wheel")
    assert r.returncode == 0, r.stderr
    wheel = next((tmp / "dist").glob("cmcl_bench-*.whl"))
    target = tmp / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                        str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    work = tmp / "elsewhere"
    work.mkdir()
    return wheel, target, work


def _run(target, work, *args):
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)


def test_wheel_ships_every_stream_spec_and_package(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for toml in (ROOT / "datasets").glob("*.toml"):
        assert f"bench/streamspecs/{toml.name}" in names
    for pkg in ("bench", "bench/features", "bench/reporting", "methods"):
        assert f"{pkg}/__init__.py" in names
    assert not any(n.startswith(("tests/", "datasets/")) for n in names)


def test_installed_cli_lists_streams_and_runs_from_another_folder(installed):
    _, target, work = installed
    r = _run(target, work, "bench.run", "--list")
    assert r.returncode == 0, r.stderr
    for stream in ("sim-paper", "toy", "quick", "paper", "real-offline"):
        assert f"  {stream} " in r.stdout
    r = _run(target, work, "bench.run", "--stream", "toy", "--methods", "vanilla", "--seeds", "1", "--epochs", "1",
             "--no-figures", "--out", "res")
    assert r.returncode == 0, r.stderr
    assert (work / "res" / "toy" / "runs" / "vanilla" / "seed0.json").is_file()
    # the code that ran is the installed copy, not this checkout
    r = _run(target, work, "bench.run", "--help")
    assert r.returncode == 0
    probe = subprocess.run([sys.executable, "-c", "import bench, methods; print(bench.__file__, methods.__file__)"],
                           cwd=work, env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True)
    assert all(p.startswith(str(target)) for p in probe.stdout.split()), probe.stdout
    shutil.rmtree(work / "res")

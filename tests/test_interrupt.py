"""Ctrl-C during a parallel sweep: it stops within seconds, keeps every finished run, prints one line."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest


@pytest.mark.parametrize("whole_group", [True, False], ids=["ctrl-c", "parent-only"])
def test_one_interrupt_stops_a_parallel_sweep_and_keeps_finished_runs(tmp_path, whole_group):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.run", "--stream", "toy", "--methods", "all", "--seeds", "3",
           "--epochs", "40", "--jobs", "2", "--no-figures", "--out", str(out)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("toy/runs/*/seed*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(out.glob("toy/runs/*/seed*.json")), "no run finished in time"
    t0 = time.monotonic()
    if whole_group:
        os.killpg(proc.pid, signal.SIGINT)         # as a terminal's Ctrl-C: the whole process group
    else:
        os.kill(proc.pid, signal.SIGINT)           # the parent only (kill -INT): it must stop its workers
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stopped = time.monotonic() - t0
    assert proc.returncode == 130 and stopped < 5, stopped
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted:")
    done = list(out.glob("toy/runs/*/seed*.json"))
    assert 0 < len(done) < 21 * 3
    for p in done:
        json.loads(p.read_text())                  # every kept file is complete
    assert not list(out.rglob("*.tmp*"))
    time.sleep(1)
    ps = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not ps, f"workers still running: {ps}"

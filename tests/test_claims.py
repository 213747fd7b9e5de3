"""Two runners on one results folder never train the same run; a dead runner's claim is taken over, at once
when it ran on this host; a sweep that leaves runs to another runner says so and does not exit 0."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from bench import run
from bench.claims import STALE, process_start

CMD = ["--stream", "toy", "--methods", "all", "--seeds", "2", "--epochs", "20", "--no-figures"]  # long enough to overlap


def test_two_overlapping_runners_share_the_work(tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "bench.run", *CMD, "--out", str(out), "--wait"]
    procs = [subprocess.Popen(argv + extra, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
             for extra in ([], ["--jobs", "2"])]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    trained = [sum(1 for line in e.splitlines() if line.startswith("[")) for e in errs]
    total = len(list(out.glob("toy/runs/*/seed*.json")))
    assert total == 21 * 2 and sum(trained) == total, (trained, total)   # every run trained exactly once
    assert all(t > 0 for t in trained)                                   # both did some of the work
    assert not list(out.rglob("*.claim"))


def test_a_live_claim_is_skipped_and_a_stale_one_taken_over(tmp_path, capsys):
    out = tmp_path / "out"
    common = ["--stream", "toy", "--seeds", "1", "--epochs", "1", "--no-figures", "--out", str(out)]
    live = out / "toy" / "runs" / "vanilla" / "seed0.json.claim"
    live.parent.mkdir(parents=True)
    live.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "x"}))
    assert run.main(common + ["--methods", "vanilla,l2"]) == 3        # not 0: the table lacks a run
    err = capsys.readouterr().err
    assert "skipped: vanilla seed 0: claimed by another runner" in err
    assert "incomplete: 1 runs are held by another runner still at work (vanilla seed 0)" in err
    assert not (out / "toy" / "runs" / "vanilla" / "seed0.json").exists() and live.exists()
    old = time.time() - STALE - 10                  # its runner stopped beating (a lost host): take it over
    os.utime(live, (old, old))
    assert run.main(common + ["--methods", "vanilla,l2"]) == 0
    assert (out / "toy" / "runs" / "vanilla" / "seed0.json").exists() and not live.exists()


def _claim(out, owner):
    path = out / "toy" / "runs" / "vanilla" / "seed0.json.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "token": "x", **owner}))
    return path


COMMON = ["--stream", "toy", "--methods", "vanilla", "--seeds", "1", "--epochs", "1", "--no-figures"]


def test_a_claim_whose_local_owner_is_dead_is_taken_over_at_once(tmp_path, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    claim = _claim(tmp_path, {"pid": dead.pid, "start": "1"})          # fresh: not stale by its age
    assert run.main(COMMON + ["--out", str(tmp_path)]) == 0
    assert (tmp_path / "toy" / "runs" / "vanilla" / "seed0.json").exists() and not claim.exists()
    assert "claimed" not in capsys.readouterr().err
    # a live pid that started at another time is another process (the pid was reused): taken over too
    claim = _claim(tmp_path, {"pid": os.getpid(), "start": "0"})
    assert run.main(COMMON + ["--out", str(tmp_path), "--force"]) == 0 and not claim.exists()


def test_wait_trains_a_held_run_once_its_owner_dies(tmp_path, capsys):
    owner = subprocess.Popen(["sleep", "60"])
    try:
        claim = _claim(tmp_path, {"pid": owner.pid, "start": process_start(owner.pid)})
        assert run.main(COMMON + ["--out", str(tmp_path)]) == 3      # alive: left to it, said, not 0
        assert "incomplete: 1 runs are held" in capsys.readouterr().err and claim.exists()
        threading.Timer(1.0, owner.kill).start()
        assert run.main(COMMON + ["--out", str(tmp_path), "--wait"]) == 0
        err = capsys.readouterr().err
        assert "waiting: vanilla seed 0: claimed by another runner" in err and "[1/1] vanilla seed 0" in err
        assert (tmp_path / "toy" / "runs" / "vanilla" / "seed0.json").exists() and not claim.exists()
    finally:
        owner.kill()
        owner.wait()


def test_sigterm_releases_claims_and_a_rerun_trains_every_run_once(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.run", "--stream", "toy", "--methods", "vanilla,dns,l2,ewc", "--seeds", "3",
           "--epochs", "15", "--jobs", "2", "--no-figures", "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("toy/runs/*/seed*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("terminated: finished runs are saved")
    assert not list(out.rglob("*.claim"))
    kept = len(list(out.glob("toy/runs/*/seed*.json")))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    trained = sum(1 for line in r.stderr.splitlines() if line.startswith("["))
    assert kept + trained == 12 == len(list(out.glob("toy/runs/*/seed*.json")))

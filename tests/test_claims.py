"""Two runners on one results folder never train the same run; a dead runner's claim is taken over."""
import json
import os
import subprocess
import sys
import time

from bench import run
from bench.claims import STALE

CMD = ["--stream", "toy", "--methods", "all", "--seeds", "2", "--epochs", "20", "--no-figures"]  # long enough to overlap


def test_two_overlapping_runners_share_the_work(tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "bench.run", *CMD, "--out", str(out)]
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
    assert run.main(common + ["--methods", "vanilla,l2"]) == 0
    err = capsys.readouterr().err
    assert "skipped: vanilla seed 0: claimed by another runner" in err
    assert not (out / "toy" / "runs" / "vanilla" / "seed0.json").exists() and live.exists()
    old = time.time() - STALE - 10                  # its runner stopped beating (killed): take it over
    os.utime(live, (old, old))
    assert run.main(common + ["--methods", "vanilla,l2"]) == 0
    assert (out / "toy" / "runs" / "vanilla" / "seed0.json").exists() and not live.exists()

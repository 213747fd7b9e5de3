"""The Ray executor: a small sweep's run files equal the local executor's. Needs the optional extra
(pip install 'cmcl-bench[ray]'); without it the sweep test skips and the missing-Ray error is still checked."""
import json
import sys

import pytest

from bench import run

SWEEP = ["--stream", "toy", "--methods", "vanilla,dns", "--grid", "dns.lambda_min=0.01,0.1", "--seeds", "2",
         "--epochs", "1", "--no-figures"]


def _records(out):
    recs = {}
    for p in sorted((out / "toy" / "runs").glob("*/seed*.json")):
        r = json.loads(p.read_text())
        recs[f"{p.parent.name}/{p.name}"] = (r["config_hash"], r["matrices"], r["method_state"],
                                            {k: v for k, v in r["summary"].items() if k != "train_seconds"})
    return recs


def test_ray_sweep_run_files_equal_the_local_executors(tmp_path):
    pytest.importorskip("ray", reason="the Ray executor needs the optional extra: pip install 'cmcl-bench[ray]'")
    assert run.main(SWEEP + ["--out", str(tmp_path / "local")]) == 0
    assert run.main(SWEEP + ["--out", str(tmp_path / "ray"), "--executor", "ray", "--jobs", "2"]) == 0
    local, remote = _records(tmp_path / "local"), _records(tmp_path / "ray")
    assert len(local) == 6 and local == remote
    # finished runs are skipped on a rerun through Ray as well
    assert run.main(SWEEP + ["--out", str(tmp_path / "ray"), "--executor", "ray", "--jobs", "2"]) == 0


def test_ray_executor_without_ray_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert run.main(SWEEP + ["--out", str(tmp_path), "--executor", "ray"]) == 2
    assert "--executor ray needs Ray, which is not installed: pip install 'cmcl-bench[ray]'" in capsys.readouterr().err

"""The Ray executor: run files equal the local executor's, also when a worker is killed or a node removed
mid-sweep (a local two-node cluster, ``ray.cluster_utils.Cluster``); its options and cluster checks. Needs
the optional extra (pip install 'cmcl-bench[ray]'); without it these tests skip and the missing-Ray error is
still checked."""
import json
import os
import signal
import sys
import threading
import time

import pytest

from bench import run
from bench.request import Execution

SWEEP = ["--stream", "toy", "--methods", "vanilla,dns", "--grid", "dns.lambda_min=0.01,0.1", "--seeds", "2",
         "--epochs", "1", "--no-figures"]
FAULTS = ["--stream", "toy", "--methods", "vanilla,dns", "--seeds", "3", "--epochs", "3", "--no-figures"]
needs_ray = pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is None,
                               reason="the Ray executor needs the optional extra: pip install 'cmcl-bench[ray]'")


def _records(out, stream="toy"):
    recs = {}
    for p in sorted((out / stream / "runs").glob("*/seed*.json")):
        r = json.loads(p.read_text())
        recs[f"{p.parent.name}/{p.name}"] = (r["config_hash"], r["matrices"], r["method_state"],
                                            {k: v for k, v in r["summary"].items() if k != "train_seconds"})
    return recs


def _leftovers(out):
    """Anything in the runs folder besides finished run files (claims, half-written files)."""
    return sorted(str(p.relative_to(out)) for p in (out / "toy" / "runs").rglob("*")
                  if p.is_file() and not (p.name.startswith("seed") and p.suffix == ".json"))


@needs_ray
def test_ray_sweep_run_files_equal_the_local_executors(tmp_path):
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


@needs_ray
@pytest.mark.parametrize("argv,message", [
    (["--device", "mps"], "--device mps with --executor ray: Ray gives runs CPUs or CUDA GPUs"),
    (["--device", "cuda:1"], "--device cuda:1 with --executor ray: Ray chooses each run's GPU; give --device cuda"),
    (["--gpus-per-run", "0.5"], "--gpus-per-run 0.5 goes with --device cuda"),
    (["--device", "cuda", "--gpus-per-run", "1.5"], "--gpus-per-run must be a fraction in (0, 1] or a whole number"),
    (["--device", "cuda", "--gpus-per-run", "0"], "--gpus-per-run must be a fraction in (0, 1] or a whole number"),
    (["--max-retries", "-1"], "--max-retries must be >= 0, got -1"),
])
def test_ray_options_are_checked_before_any_work(tmp_path, capsys, argv, message):
    assert run.main(SWEEP + ["--out", str(tmp_path / "out"), "--executor", "ray"] + argv) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [f"error: {message}"] or \
        message in err and err.count("error: ") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@needs_ray
def test_task_options_ask_ray_for_gpus_and_retry_only_system_failures():
    from bench.ray_executor import MAX_RETRIES, remote_work, task_options
    cpu = task_options(Execution(executor="ray"))
    assert cpu == {"num_cpus": 1, "num_gpus": 0.0, "max_retries": MAX_RETRIES, "retry_exceptions": False}
    assert task_options(Execution(executor="ray", device="cuda"))["num_gpus"] == 1.0
    assert task_options(Execution(executor="ray", device="cuda", gpus_per_run=0.25))["num_gpus"] == 0.25
    assert task_options(Execution(executor="ray", max_retries=0))["max_retries"] == 0
    # Ray's own bookkeeping: CPU workers reused from task to task, GPU ones not
    assert remote_work(Execution(executor="ray"))._default_options.get("max_calls") in (None, 0)
    assert remote_work(Execution(executor="ray", device="cuda"))._default_options["max_calls"] == 1


# --- a local cluster of two nodes (one CPU each), faults injected from a thread while the sweep runs ---

@pytest.fixture
def cluster():
    pytest.importorskip("ray", reason="the Ray executor needs the optional extra: pip install 'cmcl-bench[ray]'")
    if not os.path.isdir("/proc"):
        pytest.skip("finding a run's worker process reads /proc (Linux)")
    from ray.cluster_utils import Cluster
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        import ray
        ray.shutdown()
        c.shutdown()


def running_runs(raylets: set[int]) -> list[int]:
    """Pids of the workers of these raylets (one cluster's nodes) training a run now (Ray titles a worker after
    the task it runs); other clusters on the machine (tests running in parallel) are not looked at."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0]
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if title.startswith(b"ray::_work") and parent in raylets:
            out.append(int(pid))
    return out


def inject(cluster, fault, timeout=120.0) -> dict:
    """Once two runs of ``cluster`` are training (one per node), do ``fault(pids)`` once, from a thread."""
    done: dict = {}
    raylets = {p.process.pid for node in [cluster.head_node, *cluster.worker_nodes]
               for p in node.all_processes.get("raylet", [])}
    assert len(raylets) == 2

    def watch():
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pids = running_runs(raylets)
            if len(pids) >= 2:
                fault(pids)
                done["pids"] = pids
                return
            time.sleep(0.05)
    threading.Thread(target=watch, daemon=True).start()
    return done


@pytest.fixture(scope="module")
def local_faults(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    assert run.main(FAULTS + ["--out", str(out)]) == 0
    return _records(out)


@needs_ray
def test_a_killed_worker_is_retried_and_every_run_file_equals_the_local_executors(cluster, local_faults,
                                                                                  tmp_path, capfd):
    done = inject(cluster, lambda pids: os.kill(pids[0], signal.SIGKILL))
    assert run.main(FAULTS + ["--out", str(tmp_path), "--executor", "ray", "--address", cluster.address]) == 0
    err = capfd.readouterr().err
    assert done, "no worker was killed"
    assert _records(tmp_path) == local_faults and len(local_faults) == 6
    assert not _leftovers(tmp_path) and "Traceback" not in err
    assert json.loads((tmp_path / "toy" / "failures.json").read_text()) == []


@needs_ray
def test_a_node_removed_mid_sweep_loses_no_run(cluster, local_faults, tmp_path, capfd):
    done = inject(cluster, lambda pids: cluster.remove_node(cluster.worker))
    assert run.main(FAULTS + ["--out", str(tmp_path), "--executor", "ray", "--address", cluster.address]) == 0
    err = capfd.readouterr().err
    assert done, "no node was removed"
    assert _records(tmp_path) == local_faults
    assert not _leftovers(tmp_path) and "Traceback" not in err


@needs_ray
def test_a_run_lost_more_often_than_max_retries_is_listed_and_the_others_kept(cluster, local_faults, tmp_path,
                                                                              capfd):
    done = inject(cluster, lambda pids: os.kill(pids[0], signal.SIGKILL))
    rc = run.main(FAULTS + ["--out", str(tmp_path), "--executor", "ray", "--address", cluster.address,
                            "--max-retries", "0"])
    err = capfd.readouterr().err
    assert done and rc == 1, err
    failures = json.loads((tmp_path / "toy" / "failures.json").read_text())
    assert len(failures) == 1, failures
    assert failures[0]["error"].startswith("lost to a system failure (1 attempt: --max-retries 0): "
                                           "WorkerCrashedError")
    lost = f"{failures[0]['label']}/seed{failures[0]['seed']}.json"
    assert _records(tmp_path) == {k: v for k, v in local_faults.items() if k != lost}
    assert not _leftovers(tmp_path) and "Traceback" not in err
    assert f"error: {failures[0]['label']} seed {failures[0]['seed']} failed: lost to a system failure" in err


@needs_ray
def test_jobs_bound_the_runs_in_flight_on_a_cluster(cluster, tmp_path):
    from bench.executor import Sweep
    from bench.ray_executor import run_ray
    from bench.request import Request
    p = run.plan(Request.from_args(run.parse_args(FAULTS + ["--out", str(tmp_path), "--executor", "ray",
                                                            "--address", cluster.address])))
    assert p.jobs is None                   # without --jobs: as many as the cluster holds

    class Count(Sweep):
        now = most = 0

        def started(self, r):
            self.now += 1
            self.most = max(self.most, self.now)

        def finished(self, r, record):
            self.now -= 1
    sweep = Count()
    run_ray(p.todo, sweep, Execution(executor="ray", address=cluster.address, jobs=1))
    assert sweep.most == 1 and sweep.now == 0 and not sweep.failures


@needs_ray
def test_a_cluster_without_the_gpus_a_run_asks_for_is_one_line(cluster, tmp_path, capsys):
    import ray

    from bench.errors import BenchError
    from bench.ray_executor import usable_nodes
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    assert len(usable_nodes(Execution(executor="ray"))) == 2
    with pytest.raises(BenchError):          # checked first: without the check the sweep would wait forever
        usable_nodes(Execution(executor="ray", device="cuda", gpus_per_run=0.5))
    ray.shutdown()
    rc = run.main(FAULTS + ["--out", str(tmp_path / "out"), "--executor", "ray", "--address", cluster.address,
                            "--device", "cuda", "--gpus-per-run", "0.5"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    line = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(line) == 1 and "no node of the cluster has 1 CPU and 0.5 GPU for a run" in line[0]
    assert line[0].count("CPU 1, GPU 0") == 2 and "lower --gpus-per-run" in line[0]


@needs_ray
def test_a_node_that_cannot_read_the_banks_is_named(cluster, tmp_path, monkeypatch):
    import h5py
    import ray

    from bench import ray_executor
    from bench.errors import BenchError
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["content_sha256"] = "1" * 64
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    nodes = ray_executor.usable_nodes(Execution(executor="ray"))
    assert len(nodes) == 2
    for files, problem in [({str(tmp_path / "gone.h5"): "0" * 64}, f"lacks {tmp_path / 'gone.h5'}"),
                           ({str(other): "2" * 64}, f"holds another version of {other} (content 111111111111, "
                                                   "the driver's 222222222222)")]:
        monkeypatch.setattr(ray_executor, "bank_files", lambda runs, f=files: f)
        with pytest.raises(BenchError) as e:
            ray_executor.check_banks([], nodes)
        for n in nodes:
            assert f"node {ray_executor.node_name(n)} {problem}" in str(e.value)
    monkeypatch.setattr(ray_executor, "bank_files", lambda runs: {str(other): "1" * 64})
    ray_executor.check_banks([], nodes)             # the same file everywhere: no complaint


def interrupt_after_first_run(cmd: list[str], out, runs: str) -> None:
    """Start ``cmd``, send it one SIGINT once a run file is under ``out/runs``, and check it stopped as an
    interrupt: exit 130, its last line ``interrupted: …``, no traceback."""
    import subprocess
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob(f"{runs}/*/seed*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(out.glob(f"{runs}/*/seed*.json")), "no run finished in time"
    os.kill(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted:"), err


@needs_ray
def test_ctrl_c_stops_a_ray_sweep_cleanly_and_keeps_finished_runs(tmp_path):
    out = tmp_path / "out"
    interrupt_after_first_run([sys.executable, "-m", "bench.run", "--stream", "toy", "--methods", "all", "--seeds",
                               "2", "--epochs", "20", "--no-figures", "--out", str(out), "--executor", "ray",
                               "--jobs", "2"], out, "toy/runs")
    done = list(out.glob("toy/runs/*/seed*.json"))
    assert 0 < len(done) < 2 * 21
    for p in done:
        json.loads(p.read_text())
    assert not _leftovers(out)


# --- bench.tune on Ray Tune -------------------------------------------------------------------------

TUNE = ["--stream", "toy", "--methods", "l2", "--epochs", "3", "--extend", "0", "--no-figures"]


def _tuned(path):
    d = json.loads(path.read_text())
    drop = ("wall_seconds", "run_seconds", "date", "executor", "scheduler", "jobs", "code_version")
    return {k: v for k, v in d.items() if k not in drop}


@needs_ray
def test_tuning_on_ray_tune_without_a_scheduler_chooses_as_the_local_tuner(tmp_path):
    from bench import tune
    grid = ["--grid", "l2.strength=0.1,100000"]
    assert tune.main(TUNE + grid + ["--out", str(tmp_path / "l"), "--write", str(tmp_path / "l.json")]) == 0
    assert tune.main(TUNE + grid + ["--out", str(tmp_path / "r"), "--write", str(tmp_path / "r.json"),
                                    "--executor", "ray", "--jobs", "2"]) == 0
    local, remote = _tuned(tmp_path / "l.json"), _tuned(tmp_path / "r.json")
    assert local == remote and len(local["methods"]["l2"]["candidates"]) == 3
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["executor"] == "ray" and d["scheduler"] == "none" and "stopped_early" not in d["methods"]["l2"]
    assert _records(tmp_path / "l", "toy/tuning") == _records(tmp_path / "r", "toy/tuning")


@needs_ray
def test_asha_stops_a_candidate_that_falls_behind_and_never_the_default(tmp_path, capsys):
    from bench import tune
    # strength 1e5 scores below the default (1) on every tuning seed of toy; --jobs 1: the default reaches
    # ASHA's first rung (one finished run) first, so the weaker candidate is measured against it there
    argv = TUNE + ["--grid", "l2.strength=100000", "--out", str(tmp_path), "--write", str(tmp_path / "t.json"),
                   "--executor", "ray", "--scheduler", "asha", "--jobs", "1"]
    assert tune.main(argv) == 0
    d = json.loads((tmp_path / "t.json").read_text())
    entry = d["methods"]["l2"]
    assert d["scheduler"] == "asha" and entry["chosen"] == {"strength": 1.0}
    assert [c["label"] for c in entry["candidates"]] == ["l2"] and len(entry["candidates"][0]["per_seed"]) == 3
    assert entry["stopped_early"] == [{"label": "l2[strength=100000]", "runs_finished": 1, "of": 3,
                                       "value": pytest.approx(entry["stopped_early"][0]["value"])}]
    assert entry["stopped_early"][0]["value"] < entry["candidates"][0]["score"]
    assert len(list((tmp_path / "toy" / "tuning" / "runs" / "l2[strength=100000]").glob("seed*.json"))) == 1
    # a rerun resumes the experiment: nothing trains again, the same choice is written
    before = _tuned(tmp_path / "t.json")
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "toy" / "tuning" / "runs").rglob("seed*.json")}
    assert tune.main(argv) == 0
    assert _tuned(tmp_path / "t.json") == before
    # without Tune's experiment state, the trials start again and skip the runs they finished
    import shutil
    shutil.rmtree(tmp_path / "toy" / "tuning" / "ray-tune")
    assert tune.main(argv) == 0
    assert _tuned(tmp_path / "t.json") == before
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "toy" / "tuning" / "runs").rglob("seed*.json")} == files


@needs_ray
def test_asha_ranks_the_default_but_never_stops_it():
    pytest.importorskip("ray.tune", reason="tuning on Ray needs Ray Tune: pip install 'cmcl-bench[ray]'")
    from ray.tune.schedulers import TrialScheduler

    from bench.ray_tune import _scheduler

    class Trial:
        def __init__(self, row):
            self.trial_id, self.config = row, {"row": row}
    asha = _scheduler("asha", "default", steps_per_run=3, runs_per_candidate=3, mode="max")
    good, default, weak = Trial("good"), Trial("default"), Trial("weak")
    for t in (good, default, weak):
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, good, {"steps": 3, "value": 90.0}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, default, {"steps": 3, "value": 10.0}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, weak, {"steps": 3, "value": 10.0}) == TrialScheduler.STOP


def test_a_scheduler_goes_with_the_ray_executor(tmp_path, capsys):
    from bench import tune
    assert tune.main(TUNE + ["--out", str(tmp_path), "--scheduler", "asha"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --scheduler asha schedules Ray Tune's trials: it goes with --executor ray"


@needs_ray
def test_ctrl_c_stops_tuning_on_ray_tune_and_writes_no_choice(tmp_path):
    """Tune's own SIGINT handler would end the experiment "gracefully", its unfinished trials then reading as
    candidates stopped early: Ctrl-C must stay an interrupt, with nothing written."""
    out, target = tmp_path / "out", tmp_path / "t.json"
    interrupt_after_first_run([sys.executable, "-m", "bench.tune", "--stream", "toy", "--methods", "l2", "--epochs",
                               "30", "--out", str(out), "--write", str(target), "--executor", "ray", "--jobs", "2"],
                              out, "toy/tuning/runs")
    assert not target.exists()

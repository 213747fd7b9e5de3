"""Drive the real CLIs the way a user does (in-process ``main(argv)``; a few true subprocesses)."""
import json
import os
import subprocess
import sys

import pytest

import methods
from bench import run
from bench.rebuild import main as rebuild_main

TOY = ["--stream", "toy", "--epochs", "1"]


def _runs(out, stream="toy"):
    return {p.parent.name + "/" + p.stem: json.loads(p.read_text()) for p in (out / stream / "runs").glob("*/*.json")}


@pytest.fixture(scope="module")
def toy_all(tmp_path_factory):
    out = tmp_path_factory.mktemp("all")
    assert run.main(TOY + ["--methods", "all", "--seeds", "1", "--out", str(out)]) == 0
    return out


def test_every_registered_method_runs_on_toy(toy_all):
    runs = _runs(toy_all)
    assert sorted(runs) == sorted(f"{m}/seed0" for m in methods.names())
    for name, r in runs.items():
        for key in ("method", "seed", "stream", "config", "config_hash", "tasks", "matrices", "summary", "timings",
                    "versions"):
            assert key in r, (name, key)
        T = len(r["tasks"])
        assert T == 3 and r["tasks"][0]["modalities"] == ["text", "video"]
        for key in ("r1", "r5", "r10", "acc", "align_dev"):
            mat = r["matrices"][key]
            assert len(mat) == T + 1 and all(len(row) == T for row in mat), (name, key)
        assert r["matrices"]["acc"][0][2] is None          # step 3 has no Acc
        assert r["matrices"]["align_dev"][0] == [None] * T  # undefined before a task is learned
        assert r["matrices"]["align_dev"][1][0] == 0.0      # A_{1;1} is its own reference
        for key in ("acc", "bwt_acc", "r1", "r5", "r10", "bwt_r10", "fwt_r10", "forgetting_r10", "plasticity_r10",
                    "align_dev", "train_seconds"):
            assert key in r["summary"], (name, key)
        assert len(r["timings"]["steps"]) == T


def test_frozen_equals_its_row_zero_and_training_moves_scores(toy_all):
    runs = _runs(toy_all)
    frozen = runs["frozen/seed0"]["matrices"]["r10"]
    assert all(row == frozen[0] for row in frozen)
    assert runs["vanilla/seed0"]["matrices"]["r10"][1][0] != frozen[1][0]
    assert runs["vanilla/seed0"]["timings"]["steps"][0]["iterations"] > 0
    assert runs["frozen/seed0"]["timings"]["steps"][0]["iterations"] == 0


def test_outputs_table_summary_and_figures(toy_all):
    d = toy_all / "toy"
    table = (d / "table.md").read_text()
    for m in methods.names():
        assert f"| {m} |" in table
    lines = (d / "summary.csv").read_text().splitlines()
    assert lines[0] == "method,seed,metric,value" and len(lines) > len(methods.names()) * 10
    pngs = sorted(p.name for p in (d / "figures").glob("*.png"))
    assert {"summary.png", "heatmaps_r10_p1.png", "heatmaps_acc_p1.png", "stability_plasticity.png"} <= set(pngs)


def test_same_seed_gives_the_same_json(tmp_path):
    args = TOY + ["--methods", "vanilla,dns,joint", "--seeds", "1", "--no-figures"]
    assert run.main(args + ["--out", str(tmp_path / "a")]) == 0
    assert run.main(args + ["--out", str(tmp_path / "b")]) == 0
    a, b = _runs(tmp_path / "a"), _runs(tmp_path / "b")
    for k in a:
        assert a[k]["matrices"] == b[k]["matrices"]
        sa = {m: v for m, v in a[k]["summary"].items() if m != "train_seconds"}
        sb = {m: v for m, v in b[k]["summary"].items() if m != "train_seconds"}
        assert sa == sb and a[k]["config_hash"] == b[k]["config_hash"]


def test_seeds_change_results_and_parallel_jobs_match_serial(tmp_path):
    args = TOY + ["--methods", "vanilla", "--seeds", "0,1", "--no-figures"]
    assert run.main(args + ["--out", str(tmp_path / "serial")]) == 0
    assert run.main(args + ["--out", str(tmp_path / "par"), "--jobs", "2"]) == 0
    s, p = _runs(tmp_path / "serial"), _runs(tmp_path / "par")
    assert s["vanilla/seed0"]["matrices"] == p["vanilla/seed0"]["matrices"]
    assert s["vanilla/seed1"]["matrices"] == p["vanilla/seed1"]["matrices"]
    assert s["vanilla/seed0"]["matrices"]["r10"] != s["vanilla/seed1"]["matrices"]["r10"]


def test_rerun_skips_finished_runs_and_reruns_changed_configs(tmp_path, capsys):
    args = TOY + ["--methods", "vanilla,dns", "--seeds", "1", "--no-figures", "--out", str(tmp_path)]
    assert run.main(args) == 0
    path = tmp_path / "toy" / "runs" / "dns" / "seed0.json"
    first = path.read_text()
    capsys.readouterr()
    assert run.main(args) == 0
    assert "0 runs to do, 2 already done" in capsys.readouterr().err
    # another setting is a variant: its own file and row; the plain run stays
    assert run.main(args + ["--set", "dns.lambda_min=0.5"]) == 0
    assert "1 runs to do, 1 already done" in capsys.readouterr().err
    variant = json.loads((tmp_path / "toy" / "runs" / "dns[lambda_min=0.5]" / "seed0.json").read_text())
    assert variant["config"]["method_params"]["lambda_min"] == 0.5 and variant["label"] == "dns[lambda_min=0.5]"
    assert path.read_text() == first
    # a changed run-level setting reruns the runs it changes
    assert run.main(args + ["--epochs", "2"]) == 0
    assert "2 runs to do, 0 already done" in capsys.readouterr().err
    assert json.loads(path.read_text())["config"]["train"]["epochs"] == 2
    stamp = path.stat().st_mtime_ns
    assert run.main(args + ["--epochs", "2", "--force"]) == 0
    err = capsys.readouterr().err
    assert "2 runs to do, 0 already done" in err and "skipped" not in err    # --force retrains finished runs
    assert path.stat().st_mtime_ns > stamp
    assert not list(tmp_path.rglob("*.tmp"))
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask          # result files follow the umask
    capsys.readouterr()
    assert run.main(TOY + ["--methods", "vanilla,vanilla", "--seeds", "1", "--no-figures", "--out", str(tmp_path),
                           "--force"]) == 0
    assert "1 runs to do" in capsys.readouterr().err              # a repeated name runs once


@pytest.mark.parametrize("argv,message", [
    (["--methods", "vanilla,nope"], "unknown method 'nope'"),
    (["--stream", "nope"], "unknown stream 'nope'"),
    (["--set", "dns.lambda=1"], "method 'dns' has no option 'lambda'"),
    (["--set", "dns.lambda_min=big"], "option dns.lambda_min expects a number"),
    (["--set", "dns.project=sideways"], "option dns.project must be one of update, gradient"),
    (["--set", "nope.x=1"], "unknown method 'nope'"),
    (["--set", "dnslambda"], "--set expects METHOD.PARAM=VALUE"),
    (["--seeds", "two"], "--seeds must be a positive count"),
    (["--batch-size", "1"], "--batch-size must be an integer >= 2, got 1"),
    (["--threads", "0"], "--jobs and --threads must be >= 1"),
    (["--lr", "nan"], "--lr must be a finite number >= 0, got nan"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0, got nan"),
    (["--temperature", "0"], "--temperature must be a finite number > 0"),
    (["--set", "er.buffer_size=-5"], "option er.buffer_size must be >= 0, got -5"),
    (["--set", "dns.lambda_min=-1"], "option dns.lambda_min must be >= 0, got -1"),
    (["--set", "er.replay_batch=0"], "option er.replay_batch must be >= 1, got 0"),
    (["--set", "dns.lambda_min=nan"], "option dns.lambda_min must be finite"),
    (["--set", "lwf.temperature=0"], "option lwf.temperature must be > 0"),
    (["--out", "/etc/passwd"], "--out /etc/passwd: cannot write results there"),
    (["--out", "/proc/cmcl-x"], "--out /proc/cmcl-x: cannot write results there"),
    (["--methods", "vanilla", "--set", "l2.strength=3"], "--set names method 'l2', which --methods does not run"),
    (["--encoder", "imagebind"], "--encoder imagebind: stream 'toy' reads no feature banks"),
    (["--stream", "/tmp"], "--stream /tmp is a folder, not a stream file"),
    (["--device", "tpu9"], "--device 'tpu9' is not a torch device"),
    (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "cuda:99"],
     "is not usable here"),
    (["--seeds", "300000000"], "--seeds 300000000: at most 1000 seeds in one sweep"),
    (["--seeds", str(2 ** 64)], "at most 1000 seeds in one sweep"),
    (["--seeds", f"0,{2 ** 64}"], "--seeds must list distinct integers from 0 to 4294967295"),
    (["--seeds", ","], "--seeds lists no seed"),
    (["--log", ""], "--log '' names no logger"),
    (["--address", "auto"], "--address auto is an option of the Ray executor: it goes with --executor ray"),
    (["--max-retries", "2"], "--max-retries 2 is an option of the Ray executor: it goes with --executor ray"),
    (["--gpus-per-run", "0.5"], "--gpus-per-run 0.5 is an option of the Ray executor: it goes with --executor ray"),
    (["--out", ""], "--out is empty"),
    (["--encoder", ".."], "--encoder must not start with '.'"),
    (["--label", "vanilla=.."], "--label 'vanilla=..': a label must not start with '.'"),
    (["--label", "vanilla=a\\b"], "must not contain '/' or"),
    (["--methods", "vanilla,l2", "--label", "vanilla=x", "--label", "l2=x"], "vanilla and l2 would share the row 'x'"),
    (["--methods", "vanilla,dns", "--compare", "nosuch"], "--compare nosuch: no such row in this table; its rows are "
                                                          "dns, vanilla"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, argv, message):
    out = tmp_path / "out"
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")             # --out '' must not write here either
    assert run.main(["--stream", "toy", "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert not out.exists() and not list((tmp_path / "cwd").iterdir())


def _toy_named(tmp_path, name=None, **simulation):
    text = (__import__("pathlib").Path(run.__file__).parent.parent / "datasets" / "toy.toml").read_text()
    if name is not None:
        text = text.replace('name = "toy"', f"name = {json.dumps(name)}")
    for key, value in simulation.items():
        text = text.replace("[simulation]\n", f"[simulation]\n{key} = {value}\n", 1)
    path = tmp_path / "streams" / "s.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, message", [
    ("..", "key 'name' must not start with '.'"),
    (".", "key 'name' must not start with '.'"),
    ("a/b", "key 'name' must not contain '/'"),
    ("nul\u0000x", "key 'name' must not contain NUL or control characters"),
    ("x" * 300, "key 'name' must be at most 150 characters, got 300"),
])
def test_a_stream_name_that_would_put_results_elsewhere_is_refused(tmp_path, capsys, name, message):
    """name = '..' put runs and tables in --out's parent, '.' in --out itself."""
    stream = _toy_named(tmp_path, name)
    out = tmp_path / "work" / "out"
    assert run.main(["--stream", str(stream), "--methods", "vanilla", "--seeds", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: stream file {stream}: {message}" in err, err
    assert not (tmp_path / "work").exists()


def test_a_stream_too_large_for_memory_is_refused_with_the_figure(tmp_path, capsys):
    text = _toy_named(tmp_path).read_text()
    stream = tmp_path / "streams" / "big.toml"
    stream.write_text(text.replace("dim = ", "dim = 16384 # ", 1).replace("train = ", "train = 1000000 # "))
    assert run.main(["--stream", str(stream), "--methods", "vanilla", "--seeds", "1",
                     "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "simulating its features needs about" in err and "GiB available" in err, err
    assert not (tmp_path / "out").exists()


def test_a_command_line_mistake_is_one_line_not_the_usage(capsys):
    with pytest.raises(SystemExit) as e:
        run.main(["--seeds"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err == "error: argument --seeds: expected one argument (see python -m bench.run --help)\n"


def test_equal_grid_values_run_once(tmp_path, capsys):
    argv = TOY + ["--methods", "dns", "--grid", "dns.lambda_min=0.1,1e-1", "--seeds", "1", "--no-figures",
                  "--out", str(tmp_path)]
    assert run.main(argv) == 0
    err = capsys.readouterr().err
    assert "note: dns: lambda_min=1e-1 is the setting of lambda_min=0.1; it runs once" in err
    assert "1 runs to do" in err and "[1/1] dns[lambda_min=0.1] seed 0" in err
    assert [p.parent.name for p in tmp_path.glob("toy/runs/*/seed0.json")] == ["dns[lambda_min=0.1]"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_failed_run_is_reported_and_the_others_finish(tmp_path, capsys, jobs):
    """l2 at an absurd strength diverges at step 2; vanilla (planned before and after it) still runs, the table
    is built from what finished, every failure is listed, and the exit code says something failed."""
    out = tmp_path / "out"
    argv = ["--stream", "toy", "--methods", "vanilla,l2,dns", "--seeds", "1", "--epochs", "1", "--optimizer", "sgd",
            "--lr", "0.05", "--set", "l2.strength=1e9", "--no-figures", "--out", str(out), "--jobs", jobs]
    assert run.main(argv) == 1
    err = capsys.readouterr().err
    assert "error: l2[strength=1e+09] seed 0 failed: training diverged in step 3" in err
    assert "the method's own loss terms overflowed at iteration" in err          # the cause it saw
    assert "lower the method's strength option" in err and "lower --lr" not in err
    assert "error: 1 of 3 runs failed" in err and "Traceback" not in err
    assert {p.parent.name for p in out.glob("toy/runs/*/seed0.json")} == {"vanilla", "dns"}
    assert _rows_of(out / "toy" / "table.md") == ["vanilla", "dns"]
    failures = json.loads((out / "toy" / "failures.json").read_text())
    assert [(f["label"], f["seed"]) for f in failures] == [("l2[strength=1e+09]", 0)]
    # a rerun retries only the failed run
    assert run.main(argv) == 1
    assert "1 runs to do, 2 already done" in capsys.readouterr().err


def _rows_of(table):
    return [line.split("|")[1].strip() for line in table.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| method |")]


def test_malformed_stream_file_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[sources.x]\nmodalities = ["text"]\n')
    assert run.main(["--stream", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "modalities" in err and err.count("\n") == 1


def test_list_names_methods_and_streams(capsys):
    assert run.main(["--list"]) == 0
    out = capsys.readouterr().out
    for m in methods.names():
        assert f"  {m} " in out
    assert "sim-paper" in out and "toy" in out


def test_figures_rebuild_from_run_files_alone(toy_all, tmp_path):
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(toy_all, d)
    stream = d / "toy"
    table, summary = (stream / "table.md").read_bytes(), (stream / "summary.csv").read_bytes()
    (stream / "table.md").unlink()
    (stream / "summary.csv").unlink()
    shutil.rmtree(stream / "figures")
    assert rebuild_main([str(d)]) == 0
    assert (stream / "table.md").read_bytes() == table
    assert (stream / "summary.csv").read_bytes() == summary
    assert (stream / "figures" / "summary.png").stat().st_size > 10_000


def test_figures_subset_over_several_streams_draws_those_that_have_it(toy_all, tmp_path, capsys):
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(toy_all, d)
    shutil.copytree(d / "toy", d / "other")
    shutil.rmtree(d / "other" / "runs" / "vanilla")
    assert rebuild_main([str(d), "--methods", "vanilla", "--out", str(tmp_path / "sub"), "--no-figures"]) == 0
    assert (tmp_path / "sub" / "toy" / "table.md").exists() and not (tmp_path / "sub" / "other").exists()
    # a stream with some of the rows but not all: refused before anything is written
    assert rebuild_main([str(d), "--methods", "vanilla,l2", "--out", str(tmp_path / "sub2"), "--no-figures"]) == 2
    assert "other: no runs of vanilla" in capsys.readouterr().err and not (tmp_path / "sub2").exists()


def test_compare_sets_the_reference_of_the_marks_and_a_rerun_follows_it(tmp_path, capsys):
    args = TOY + ["--methods", "vanilla,dns,ewc", "--seeds", "3", "--no-figures", "--out", str(tmp_path)]
    assert run.main(args) == 0
    table = tmp_path / "toy" / "table.md"
    assert "better / worse than vanilla" in table.read_text()
    capsys.readouterr()
    # nothing to train, but another reference: the table is rebuilt, not read back
    assert run.main(args + ["--compare", "dns"]) == 0
    assert "better / worse than dns" in table.read_text() and "0 runs to do" in capsys.readouterr().err
    # a rows' subset without the reference, or a row that is not there: one line, exit 2, nothing written
    before = table.read_bytes()
    assert rebuild_main([str(tmp_path), "--compare", "nosuch", "--no-figures"]) == 2
    assert "--compare nosuch: no such row in" in capsys.readouterr().err
    assert rebuild_main([str(tmp_path), "--methods", "ewc,dns", "--compare", "vanilla", "--out",
                         str(tmp_path / "sub"), "--no-figures"]) == 2
    assert "its rows are dns, ewc" in capsys.readouterr().err and not (tmp_path / "sub").exists()
    assert table.read_bytes() == before
    assert rebuild_main([str(tmp_path), "--compare", "ewc", "--no-figures"]) == 0
    assert "better / worse than ewc" in table.read_text()


def test_list_into_a_closed_pipe_is_quiet():
    r = subprocess.run(f"set -o pipefail; {sys.executable} -m bench.run --list | head -1", shell=True,
                       executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "methods:\n" and r.stderr == "", r.stderr


def _py(code_or_args, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    return subprocess.run([sys.executable, *code_or_args], capture_output=True, text=True, env=env, timeout=300, **kw)


def test_subprocess_exit_codes_and_no_traceback(tmp_path):
    r = _py(["-m", "bench.run", "--stream", "nope", "--out", str(tmp_path)])
    assert r.returncode == 2 and r.stderr.startswith("error: unknown stream") and "Traceback" not in r.stderr
    for name in ("bench.rebuild", "bench.figures"):      # bench.figures: the command's first name, kept
        r = _py(["-m", name, str(tmp_path / "empty")])
        assert r.returncode == 2 and r.stderr.startswith("error: no results") and "Traceback" not in r.stderr
    r = _py(["-m", "bench.run", "--help"])
    assert r.returncode == 0 and "--methods" in r.stdout


def test_help_and_figures_do_not_import_torch_or_avalanche(toy_all):
    code = ("import sys\n"
            "from bench import run\nfrom bench.rebuild import main as rebuild_main\n"
            "try:\n    run.parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
            f"assert rebuild_main([{str(toy_all)!r}]) == 0\n"
            "heavy = [m for m in ('torch', 'avalanche') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    r = _py(["-c", code])
    assert r.returncode == 0, r.stderr


def test_out_dot_keeps_built_in_stream_names(tmp_path, monkeypatch, capsys):
    """With --out . the results folder ./toy sits where a stream path could be looked up: the built-in
    stream name still means the built-in stream, and a rerun finds its finished run."""
    monkeypatch.chdir(tmp_path)
    args = TOY + ["--methods", "vanilla", "--seeds", "1", "--no-figures", "--out", "."]
    assert run.main(args) == 0
    assert (tmp_path / "toy" / "runs" / "vanilla" / "seed0.json").is_file()
    capsys.readouterr()
    assert run.main(args) == 0
    assert "0 runs to do, 1 already done" in capsys.readouterr().err


@pytest.mark.parametrize("cli, argv, message", [
    ("tune", ["--stream", "toy", "--methods", "l2", "--untuned"], "--untuned is not used by bench.tune"),
    ("tune", ["--stream", "toy", "--methods", "l2", "--wait"], "--wait is not used by bench.tune"),
    ("tune", ["--stream", "toy", "--methods", "l2", "--write", ""], "--write is empty"),
    ("tune", ["--stream", "toy", "--methods", "l2", "--write", "/proc/cmcl-x/t.json"], "--write /proc/cmcl-x: cannot"),
    ("rebuild", ["{results}", "--out", ""], "--out is empty"),
    ("prepare", ["real-offline", "--out", "{file}"], "is not a folder"),
    ("prepare", ["real-offline", "--out", ""], "--out is empty"),
    ("prepare", ["real-offline", "--cache", "{file}"], "--cache {file}: cannot write"),
    ("features", ["import-official", "--features", "f", "--datasets", "d", "--encoder", "ib", "--out", "{file}"],
     "is not a folder"),
    ("features", ["import-official", "--features", "f", "--datasets", "d", "--encoder", "..", "--out", "{out}"],
     "--encoder must not start with '.'"),
])
def test_every_cli_refuses_an_unusable_output_before_any_work(toy_all, tmp_path, capsys, monkeypatch, cli, argv,
                                                               message):
    """Output paths and names are checked first: a read-only --write failed after every tuning run, and
    bench.prepare --out FILE unpacked thousands of files before failing."""
    from bench import tune
    from bench.features import __main__ as features
    from bench.features import real_offline
    mains = {"tune": tune.main, "rebuild": rebuild_main, "prepare": real_offline.main, "features": features.main}
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    file = tmp_path / "a-file"
    file.write_text("x")
    fill = {"{file}": str(file), "{out}": str(tmp_path / "out"), "{results}": str(toy_all)}
    argv = [fill.get(a, a) for a in argv]
    assert mains[cli](argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.replace("{file}", str(file)) in err, err
    assert not list((tmp_path / "cwd").iterdir()) and not (tmp_path / "out").exists()


def test_a_full_disk_while_drawing_is_one_line_and_keeps_runs_and_old_outputs(toy_all, tmp_path, capsys, monkeypatch):
    import shutil

    import matplotlib.figure
    d = tmp_path / "copy"
    shutil.copytree(toy_all, d)
    before = {p: p.read_bytes() for p in (d / "toy").rglob("*") if p.is_file()}

    def savefig(self, *args, **kwargs):
        import errno
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise AttributeError("'Stream' object has no attribute 'pos'")     # noqa: B904 - as PIL does

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    assert rebuild_main([str(d)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: No space left on device; finished runs are saved, rerun to continue"], err
    after = {p: p.read_bytes() for p in (d / "toy").rglob("*") if p.is_file()}
    assert after == before                      # run files and the previous tables and figures, untouched


def test_a_real_full_disk_while_drawing_is_one_line(toy_all, tmp_path):
    """The same on a small tmpfs (needs root and mount; skipped elsewhere)."""
    import shutil
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root and mount permission")
    try:
        shutil.copytree(toy_all / "toy" / "runs", mnt / "toy" / "runs")
        r = _py(["-m", "bench.rebuild", str(mnt)])
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.splitlines()[-1].startswith("error: No space left on device"), r.stderr
        assert len(list((mnt / "toy" / "runs").glob("*/seed0.json"))) == len(methods.names())
        assert not list(mnt.rglob(".staging-*"))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is not None, reason="Ray is installed here")
def test_the_ray_executor_without_ray_is_refused_before_any_work(tmp_path, capsys):
    assert run.main(TOY + ["--executor", "ray", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == "error: --executor ray needs Ray, which is not installed: pip install 'cmcl-bench[ray]'\n"
    assert not (tmp_path / "out").exists()


class _Writes:
    """A stderr that records each write() call apart (a log file: not a terminal)."""

    def __init__(self):
        self.calls: list[str] = []

    def write(self, text):
        self.calls.append(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def test_each_progress_line_is_one_write_with_its_newline(tmp_path, monkeypatch):
    """A Ctrl-C between a line and its newline glued 'interrupted: …' onto the last progress line."""
    err = _Writes()
    monkeypatch.setattr(sys, "stderr", err)
    assert run.main(["--stream", "toy", "--methods", "vanilla", "--seeds", "2", "--epochs", "1", "--jobs", "1",
                     "--no-figures", "--out", str(tmp_path)]) == 0
    lines = [c for c in err.calls if c.startswith(("[1/2]", "[2/2]", "warning: vanilla"))]
    assert len([c for c in lines if c.startswith("[")]) == 2
    assert all(c.endswith("\n") and c.count("\n") == 1 for c in lines), lines

"""The command line answers without importing torch or avalanche when nothing will train: --list, argument
and stream-file errors, a rerun with nothing to do. The method declarations it needs come from
``bench.catalogue``, which must agree with the real classes."""
import json
import os
import subprocess
import sys

import pytest

from bench import catalogue, registry


def _fields(cls):
    norm = lambda d: {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}   # noqa: E731
    return {"role": cls.role, "family": cls.family, "sees_old_data": cls.sees_old_data,
            "uses_closure": cls.uses_closure, "defaults": cls.defaults, "choices": norm(cls.choices),
            "types": cls.types, "search_space": cls.search_space, "bounds": norm(cls.bounds),
            "describe": cls.describe(), "doc": __import__("inspect").cleandoc(cls.__doc__ or "")}


def test_the_catalogue_declares_what_the_classes_declare(tmp_path, monkeypatch):
    monkeypatch.setenv("CMCL_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(catalogue, "_SPECS", None)
    real = registry.registry()
    specs = catalogue.specs()
    assert list(specs) == list(real)                     # same names, same table order
    for name, cls in real.items():
        spec = specs[name]
        assert _fields(spec) == _fields(cls), name
        assert spec.resolve({}) == cls.resolve({})
        for key, value in cls.defaults.items():          # text from the command line parses alike
            text = "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            assert spec.resolve({key: text}) == cls.resolve({key: text}), (name, key)
    assert len(list(tmp_path.glob("methods-*.json"))) == 1


def test_a_cache_that_cannot_be_read_is_rebuilt_and_one_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("CMCL_BENCH_CACHE", str(tmp_path))
    path = tmp_path / f"methods-{catalogue.cache_key()}.json"
    path.write_text("{not json")
    monkeypatch.setattr(catalogue, "_SPECS", None)
    assert catalogue.names() == registry.names()
    assert json.loads(path.read_text()).keys() == set(registry.names())
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("CMCL_BENCH_CACHE", str(blocked / "sub"))     # under a file: cannot be created
    monkeypatch.setattr(catalogue, "_SPECS", None)
    assert catalogue.names() == registry.names()


def test_the_cache_key_covers_every_method_file():
    import methods
    files = {p.name for p in catalogue._sources()}
    assert {p.name for p in __import__("pathlib").Path(methods.__file__).parent.glob("*.py")} <= files
    assert {"method_spec.py", "registry.py"} <= files


def _quick(tmp_path, argv, cwd):
    """Run bench.run in a fresh interpreter; report its exit code and whether torch/avalanche got imported."""
    code = ("import sys\nfrom bench import run\n"
            f"rc = run.main({argv!r})\n"
            "heavy = [m for m in ('torch', 'avalanche') if m in sys.modules]\n"
            "print('HEAVY', heavy, 'RC', rc)\n")
    env = dict(os.environ, CMCL_BENCH_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    last = r.stdout.strip().splitlines()[-1]
    return last, r.stderr


@pytest.mark.parametrize("argv, rc, err", [
    (["--list"], 0, ""),
    (["--describe", "dns"], 0, ""),
    (["--methods", "nope"], 2, "unknown method 'nope'"),
    (["--methods", "ewc_online"], 2, "unknown method 'ewc_online'; did you mean 'ewc-online'?"),
    (["--describe", "dsn"], 2, "did you mean 'dns'?"),
    (["--set", "dns.lamda_min=1"], 2, "no option 'lamda_min'; did you mean 'lambda_min'?"),
    (["--stream", "sim-papr"], 2, "did you mean 'sim-paper'?"),
    (["--lr", "nan"], 2, "--lr must be a finite number"),
    (["--set", "dns.lambda_min=-1"], 2, "option dns.lambda_min must be >= 0"),
    (["--stream", "nope"], 2, "unknown stream"),
    (["--device", "meta"], 2, "--device meta holds no values"),
    (["--device", "foo"], 2, "--device 'foo' is not a torch device"),
    (["--seeds", "300000000"], 2, "at most 1000 seeds"),
])
def test_list_and_errors_import_neither_torch_nor_avalanche(tmp_path, argv, rc, err):
    _quick(tmp_path, ["--list"], tmp_path)                       # builds the declarations' cache once
    last, stderr = _quick(tmp_path, argv + ["--out", str(tmp_path / "out")], tmp_path)
    assert last == f"HEAVY [] RC {rc}" and err in stderr, (last, stderr)


def test_a_rerun_with_nothing_to_do_imports_neither_and_keeps_the_outputs(tmp_path):
    argv = ["--stream", "toy", "--epochs", "1", "--methods", "vanilla,dns", "--seeds", "1", "--out", str(tmp_path / "out")]
    last, _ = _quick(tmp_path, argv, tmp_path)
    assert last.endswith("RC 0")
    stream = tmp_path / "out" / "toy"
    before = {p: p.stat().st_mtime_ns for p in stream.rglob("*") if p.is_file()}
    last, stderr = _quick(tmp_path, argv, tmp_path)
    assert last == "HEAVY [] RC 0" and "0 runs to do, 2 already done" in stderr
    assert {p: p.stat().st_mtime_ns for p in stream.rglob("*") if p.is_file()} == before   # nothing redrawn
    # a new run file makes the outputs stale: the next rerun rebuilds them (without training)
    run = stream / "runs" / "vanilla" / "seed0.json"
    os.utime(run, ns=(run.stat().st_atime_ns, (stream / "table.md").stat().st_mtime_ns + 10**9))
    last, _ = _quick(tmp_path, argv, tmp_path)
    assert last == "HEAVY [] RC 0" and (stream / "table.md").stat().st_mtime_ns > before[stream / "table.md"]


def test_describe_prints_paper_adaptation_options_with_bounds_search_space_and_tuned_values(capsys):
    from bench import run
    assert run.main(["--describe", "ewc"]) == 0
    out = capsys.readouterr().out
    assert "Kirkpatrick" in out and "Adaptation" in out               # the paper and its adaptation paragraph
    assert "strength" in out and "float >= 0" in out and "tuned over 1.0, 10.0, 100.0" in out
    tuned = json.load(open(__import__("bench.streams").streams.builtin_streams()["sim-paper"].with_name(
        "sim-paper.tuned.json")))["methods"]["ewc"]["chosen"]
    assert f"sim-paper (sim-paper.tuned.json): strength={tuned['strength']}" in out
    assert run.main(["--describe", "gpm"]) == 0                        # a bounded option says its bounds
    assert "energy" in capsys.readouterr().out
    from bench.describe import allowed
    spec = catalogue.get("gpm")
    low, high, low_open = spec.bounds["energy"]
    assert allowed(spec, "energy") == f"float {'>' if low_open else '>='} {low:g} <= {high:g}"
    assert run.main(["--describe", "vanilla"]) == 0 and "nothing to tune" in capsys.readouterr().out
    from bench import tune
    assert tune.main(["--describe", "l2", "--out", "/nonexistent/never"]) == 0   # answered, nothing tuned

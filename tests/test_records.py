"""The run record's schema (bench.reporting.records.RunRecord): what a run builds is what the schema says,
and a file that breaks it is refused with one line naming the file and the key."""
import json
from typing import get_type_hints

import pytest

from bench.errors import BenchError
from bench.reporting.records import REQUIRED, RunRecord, TaskEntry, Timings, _required, read_run


@pytest.fixture(scope="module")
def record():
    from bench.api import run
    return run("l2", "toy", 0, epochs=1).record


def _check(value, typed):
    hints = get_type_hints(typed)
    assert set(_required(typed)) <= set(value) <= set(hints), typed.__name__


def test_a_built_record_holds_the_schemas_keys_and_types(record):
    _check(record, RunRecord)
    for key, kind in REQUIRED.items():
        assert isinstance(record[key], kind), key
    for task in record["tasks"]:
        _check(task, TaskEntry)
    _check(record["timings"], Timings)
    n = len(record["tasks"])
    assert all(len(m) == n + 1 and all(len(r) == n for r in m) for m in record["matrices"].values())


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("config_hash"), "missing key 'config_hash'"),
    (lambda r: r.update(seed="0"), "key 'seed' must be a JSON integer"),
    (lambda r: r["matrices"]["r10"].pop(), "key 'matrices.r10' must be 4 rows of 3 values"),
    (lambda r: r.update(schema=99), "key 'schema' is 99"),
])
def test_a_file_breaking_the_schema_is_refused_naming_file_and_key(record, tmp_path, edit, message):
    data = json.loads(json.dumps(record))
    edit(data)
    path = tmp_path / "seed0.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BenchError) as e:
        read_run(path)
    assert str(e.value).startswith(f"run file {path}: ") and message in str(e.value)


def _folder(tmp_path, record, seeds=(0, 1, 2)):
    """A results folder holding the record as runs of several seeds (the summary follows the matrices)."""
    stream = tmp_path / "toy"
    for s in seeds:
        data = json.loads(json.dumps(record))
        data["seed"] = s
        path = stream / "runs" / "l2" / f"seed{s}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    return stream


def _rebuild_refuses(tmp_path, capsys, message):
    from bench.rebuild import main as rebuild_main
    assert rebuild_main([str(tmp_path), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not list(tmp_path.rglob("table.md")) and not list(tmp_path.rglob("summary.csv"))


@pytest.mark.parametrize("copy", ["seed00.json", "seedx.json", "seed0 (copy).json"])
def test_a_stray_copy_of_a_run_file_is_refused_not_counted_as_another_seed(record, tmp_path, capsys, copy):
    stream = _folder(tmp_path, record)
    (stream / "runs" / "l2" / copy).write_bytes((stream / "runs" / "l2" / "seed0.json").read_bytes())
    _rebuild_refuses(tmp_path, capsys, f"run file {stream / 'runs' / 'l2' / copy}: records l2 seed 0, whose file "
                                       f"is {stream / 'runs' / 'l2' / 'seed0.json'}")


def test_a_run_file_in_another_rows_folder_is_refused(record, tmp_path, capsys):
    stream = _folder(tmp_path, record)
    (stream / "runs" / "vanilla").mkdir()
    (stream / "runs" / "l2" / "seed2.json").rename(stream / "runs" / "vanilla" / "seed2.json")
    _rebuild_refuses(tmp_path, capsys, "records l2 seed 2, whose file is")


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["summary"].update(r10=None), "key 'summary.r10' is 'None' but its matrices give"),
    (lambda r: r["summary"].update(r10=r["summary"]["r10"] + 1), "key 'summary.r10' is"),
    (lambda r: r["matrices"]["r10"][1].__setitem__(0, "53.2"), "'matrices.r10' row 1 column 0 is '53.2'"),
    (lambda r: r["matrices"]["acc"][2].__setitem__(1, True), "'matrices.acc' row 2 column 1 is True"),
    (lambda r: r["timings"].update(train_seconds="1"), "key 'timings.train_seconds' must be a finite number"),
])
def test_a_summary_or_cell_that_disagrees_with_the_matrices_is_refused(record, tmp_path, capsys, edit, message):
    stream = _folder(tmp_path, record)
    path = stream / "runs" / "l2" / "seed1.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    _rebuild_refuses(tmp_path, capsys, f"run file {path}: ")
    _rebuild_refuses(tmp_path, capsys, message)


@pytest.mark.parametrize("constant", ["Infinity", "-Infinity", "NaN"])
def test_infinity_is_refused_like_nan(record, tmp_path, capsys, constant):
    stream = _folder(tmp_path, record)
    path = stream / "runs" / "l2" / "seed1.json"
    text = path.read_text().replace('"r10": ' + json.dumps(record["summary"]["r10"]), f'"r10": {constant}', 1)
    assert constant in text
    path.write_text(text)
    _rebuild_refuses(tmp_path, capsys, f"run file {path}: holds {constant}, which is not a JSON number")


def test_a_record_with_a_non_finite_value_is_never_written(record, tmp_path):
    from bench.reporting.records import write_run
    data = json.loads(json.dumps(record))
    data["timings"]["steps"][0]["train_seconds"] = float("inf")
    with pytest.raises(ValueError):
        write_run(tmp_path / "seed0.json", data)
    assert not list(tmp_path.iterdir())


def test_the_tables_count_the_runs_they_average(record, tmp_path):
    from bench.rebuild import main as rebuild_main
    stream = _folder(tmp_path, record)
    assert rebuild_main([str(tmp_path), "--no-figures"]) == 0
    assert "| l2 | 3 |" in (stream / "table.md").read_text()

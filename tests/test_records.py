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

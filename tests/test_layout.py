"""The seed rule, the run-record schema and the dependency direction of the new layout."""
import json
import subprocess
import sys

import pytest
import torch

from bench import seeds
from bench.errors import BenchError
from bench.reporting.records import SCHEMA, read_run
from methods._importance import batches


class _Ctx:
    def __init__(self, seed, step=0):
        self.seed, self.step = seed, step

    def rng(self, purpose, salt=0):
        return seeds.generator(self.seed, purpose, self.step, salt)


def test_importance_batches_depend_on_the_run_seed_and_the_step():
    a, b, c = (torch.cat(batches(_Ctx(s, t), 200, 64)) for s, t in ((0, 1), (1, 1), (0, 2)))
    assert not torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, torch.cat(batches(_Ctx(0, 1), 200, 64)))


def test_seed_purposes_give_distinct_streams():
    for p, (a, b, _) in seeds.PURPOSES.items():        # each purpose: a different stream per seed (and step)
        keys = [(s, p, t) for s in (range(3) if a else [0]) for t in (range(12) if b else [0])]
        assert len({seeds.derive(*k) for k in keys}) == len(keys), p
    # validation pairs are the same for every run seed (a = 0) and differ per source
    assert seeds.derive(0, "validation", 1) == seeds.derive(5, "validation", 1) != seeds.derive(0, "validation", 2)
    with pytest.raises(ValueError, match="unknown random-stream purpose"):
        seeds.derive(0, "nope")


def test_run_records_refuse_a_newer_schema_and_upgrade_schema_zero(tmp_path):
    base = {"method": "vanilla", "seed": 0, "config_hash": "x", "matrices": {}, "tasks": [],
            "summary": {"stability_dev": 0.5}, "order": 5}
    p = tmp_path / "old.json"
    p.write_text(json.dumps(base))
    run = read_run(p)
    assert run["summary"] == {"align_dev": 0.5} and run["role"] == "naive" and run["schema"] == SCHEMA
    p.write_text(json.dumps({**base, "schema": SCHEMA + 1}))
    with pytest.raises(BenchError, match="'schema'"):
        read_run(p)
    p.write_text("5")
    with pytest.raises(BenchError, match="not a run record"):
        read_run(p)


def test_bench_never_imports_methods_statically():
    code = "import bench.run, bench.runner, bench.trainer, sys; print('methods' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr

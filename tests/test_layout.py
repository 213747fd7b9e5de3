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
    # validation pairs: drawn from the world (never the run seed: bench.scenario.validation_split is given the
    # world), per source; world 0 draws what every run drew before worlds existed (a·0 + b·k + c)
    assert seeds.derive(0, "validation", 1) == 1_000_037 + 101 != seeds.derive(0, "validation", 2)
    assert seeds.derive(1, "validation", 1) != seeds.derive(0, "validation", 1)
    with pytest.raises(ValueError, match="unknown random-stream purpose"):
        seeds.derive(0, "nope")


def test_run_records_refuse_a_newer_schema_and_upgrade_schema_zero(tmp_path):
    empty = {k: [[]] for k in ("r1", "r5", "r10", "acc", "align_dev")}        # 0 tasks: one empty row each
    base = {"method": "vanilla", "seed": 0, "config_hash": "x", "matrices": empty, "tasks": [], "stream": "toy",
            "config": {}, "timings": {}, "summary": {"stability_dev": None, "train_seconds": 2.5}, "order": 5}
    p = tmp_path / "old.json"
    p.write_text(json.dumps(base))
    run = read_run(p)
    assert "stability_dev" not in run["summary"] and run["summary"]["align_dev"] is None
    assert run["timings"]["train_seconds"] == 2.5 == run["summary"]["train_seconds"]
    assert run["role"] == "naive" and run["schema"] == SCHEMA
    p.write_text(json.dumps({**base, "schema": SCHEMA + 1}))
    with pytest.raises(BenchError, match="'schema'"):
        read_run(p)
    p.write_text("5")
    with pytest.raises(BenchError, match="not a run record"):
        read_run(p)


@pytest.mark.parametrize("content,message", [
    ("null", "not a run record"),
    ('{"method": "vanilla", "seed": "0"}', "key 'seed' must be a JSON integer"),
    ('{"method": "vanilla", "seed": 0}', "missing key 'stream'"),
    ("no-r10", "key 'matrices.r10' must be 4 rows of 3 values"),
    ("short-acc", "key 'matrices.acc' must be 4 rows of 3 values"),
])
def test_malformed_run_files_are_one_line_errors_for_a_rebuild_and_a_resume(tmp_path, capsys, content, message):
    from bench.rebuild import main as figures
    from bench.run import main as run
    assert run(["--stream", "toy", "--methods", "vanilla", "--seeds", "1", "--epochs", "1", "--no-figures",
                "--out", str(tmp_path)]) == 0
    path = tmp_path / "toy" / "runs" / "vanilla" / "seed0.json"
    good = json.loads(path.read_text())
    for key in ("config", "timings"):                   # a record missing any required key is refused
        path.write_text(json.dumps({k: v for k, v in good.items() if k != key}))
        with pytest.raises(BenchError, match=f"missing key '{key}'"):
            read_run(path)
    if content == "no-r10":
        content = json.dumps({**good, "matrices": {k: v for k, v in good["matrices"].items() if k != "r10"}})
    elif content == "short-acc":
        content = json.dumps({**good, "matrices": {**good["matrices"], "acc": good["matrices"]["acc"][:2]}})
    path.write_text(content)
    capsys.readouterr()
    assert figures([str(tmp_path), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err
    # a resume treats the unreadable file as not done and runs it again
    assert run(["--stream", "toy", "--methods", "vanilla", "--seeds", "1", "--epochs", "1", "--no-figures",
                "--out", str(tmp_path)]) == 0
    assert read_run(path)["config_hash"] == good["config_hash"]


def test_bench_never_imports_methods_statically():
    code = "import bench.run, bench.runner, bench.trainer, sys; print('methods' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def _layout_block(text: str, heading: str) -> str:
    after = text[text.index(heading):]
    return after[after.index("```") + 3:after.index("```", after.index("```") + 3)]


def test_the_layouts_in_readme_and_design_list_every_module():
    """Every module of bench/ is named in docs/design.md's layout (as file.py) and README's (by its name)."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    modules = [p for p in (root / "bench").rglob("*.py") if not p.name.startswith("__") and "streamspecs" not in p.parts]
    design = _layout_block((root / "docs" / "design.md").read_text(), "## Layout")
    readme = _layout_block((root / "README.md").read_text(), "## Layout")
    assert not [p.name for p in modules if not re.search(rf"(?<![\w/]){re.escape(p.name)}\b", design)]
    assert not [p.stem for p in modules if not re.search(rf"(?<![\w/]){re.escape(p.stem)}\b", readme)]

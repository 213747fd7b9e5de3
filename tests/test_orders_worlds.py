"""Task orders and worlds as sources of variation: --orders K and --worlds K through the real CLI."""
import csv
import json

import pytest

from bench import run
from bench.scenario import order_permutation

TOY = ["--stream", "toy", "--epochs", "1", "--no-figures"]


def _final_by_task(record, key="r10"):
    """The last row of a matrix, by task name (a run's columns follow the order it trained)."""
    return {t["name"]: v for t, v in zip(record["tasks"], record["matrices"][key][-1])}


def test_order_permutations_are_seeded_distinct_and_stable():
    assert order_permutation(3, 0) == [0, 1, 2]
    perms = [order_permutation(3, k) for k in range(6)]
    assert sorted(map(tuple, perms)) == sorted({tuple(p) for p in perms})      # all 6 orders of 3 steps, once
    assert order_permutation(5, 2) == order_permutation(5, 2)                  # the same in any sweep


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    out = tmp_path_factory.mktemp("varied")
    assert run.main(TOY + ["--methods", "frozen,vanilla,dns", "--seeds", "2", "--out", str(out)]) == 0
    assert run.main(TOY + ["--methods", "frozen,vanilla,dns", "--seeds", "2", "--orders", "2", "--worlds", "2",
                           "--out", str(out)]) == 0
    return out / "toy"


def _read(d, row, name):
    return json.loads((d / "runs" / row / f"{name}.json").read_text())


def test_a_run_in_another_order_trains_the_same_tasks_in_another_sequence(varied):
    first, other = _read(varied, "vanilla", "seed0"), _read(varied, "vanilla", "seed0-order1")
    assert "order" not in first["config"] and other["config"]["order"] == 1
    names = [t["name"] for t in first["tasks"]]
    perm = order_permutation(len(names), 1)
    assert [t["name"] for t in other["tasks"]] == [names[i] for i in perm] != names
    # a task keeps its test pairs in any order: the untrained reference scores each task alike
    f0, f1 = _read(varied, "frozen", "seed0"), _read(varied, "frozen", "seed0-order1")
    assert _final_by_task(f0) == _final_by_task(f1)
    assert _final_by_task(first) != _final_by_task(other)                # trained in another sequence


def test_another_world_is_another_simulated_stream_and_world_zero_is_the_files(varied, capsys):
    f0, f1 = _read(varied, "frozen", "seed0"), _read(varied, "frozen", "seed0-world1")
    assert f1["config"]["world"] == 1 and _final_by_task(f0) != _final_by_task(f1)
    # the stream file's own order and world keep their run files and hashes: nothing of them was retrained
    assert run.main(TOY + ["--methods", "frozen,vanilla,dns", "--seeds", "2", "--orders", "2", "--worlds", "2",
                           "--out", str(varied.parent)]) == 0
    assert "0 runs to do, 24 already done" in capsys.readouterr().err


def test_the_table_and_summary_say_what_varied(varied):
    table = (varied / "table.md").read_text()
    assert "over runs (seeds 0, 1; task orders 0, 1; worlds 0, 1)" in table
    assert "| vanilla | 8 |" in table
    rows = list(csv.DictReader((varied / "summary.csv").open()))
    assert {(r["seed"], r["order"], r["world"]) for r in rows} == {(s, o, w) for s in "01" for o in "01" for w in "01"}


def test_figures_step_by_step_read_the_files_own_order(varied):
    from bench.reporting.figures import Plotter
    from bench.reporting.records import load_runs
    runs = load_runs(varied)
    p = Plotter(runs, varied / "unused", "toy")
    assert {r["config"].get("order", 0) for rs in p.in_order.values() for r in rs} == {0}
    assert len(p.in_order["vanilla"]) == 4 and len(p.by_method["vanilla"]) == 8
    assert [t["name"] for t in p.tasks] == [t["name"] for t in _read(varied, "vanilla", "seed0")["tasks"]]
    assert "task order" in p.order_note


@pytest.mark.parametrize("argv,message", [
    (["--orders", "0"], "--orders must be an integer from 1 to 100, got 0"),
    (["--worlds", "-1"], "--worlds must be an integer from 1 to 100, got -1"),
    (["--orders", "7"], "--orders 7: stream 'toy' has 3 steps, so 6 task orders"),
])
def test_bad_orders_and_worlds_are_one_line_exit_2(tmp_path, capsys, argv, message):
    assert run.main(TOY + ["--methods", "vanilla", "--out", str(tmp_path / "o")] + argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}" and not (tmp_path / "o").exists()


def test_the_validation_split_of_world_zero_is_unchanged_and_others_differ():
    import torch

    from bench import seeds
    from bench.scenario import validation_split
    from bench.simulate import simulate
    from bench.streams import load
    spec = load("toy")
    sources = simulate(spec)
    name = next(iter(sources))
    ids = {w: validation_split(spec, sources, w)[name]["test"].ids for w in (0, 1)}
    n = len(sources[name]["train"])
    n_val = len(ids[0])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seeds.derive(0, "validation", 0)))
    assert ids[0] == [sources[name]["train"].ids[i] for i in perm[:n_val].sort().values]
    assert ids[0] != ids[1]

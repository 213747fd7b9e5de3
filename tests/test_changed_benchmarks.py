"""A benchmark changed with Avalanche's utilities trains and evaluates what its experiences say — their own
steps (task labels), order and pairs — or is refused with one line; its runs never share a configuration
hash with the stream file's; the bridge places every evaluation at its row, evaluates any stream on its own
pairs and reports the table's summary metrics per stream."""
import json
from pathlib import Path

import pytest
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.benchmarks.scenarios.validation_scenario import benchmark_with_validation_stream
from avalanche.training import Replay

from bench import api, bridge, run, streams
from bench.errors import BenchError
from bench.runner import get_scenario
from bench.scenario import annotate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy():
    """The toy stream's cached scenario; whatever benchmark a test puts on it, the stream file's comes back."""
    sc = get_scenario(streams.load("toy"))
    full = sc.benchmark
    yield sc, full
    sc.benchmark = full


def _bench(sc, train, test):
    return annotate(benchmark_from_datasets(train=[e.dataset for e in train], test=[e.dataset for e in test]), sc)


def _reversed_toy_file(tmp_path) -> Path:
    head, *steps = (ROOT / "datasets" / "toy.toml").read_text().split("[[steps]]")
    path = tmp_path / "toy-reversed.toml"
    path.write_text(head + "".join("[[steps]]" + s.rstrip() + "\n\n" for s in reversed(steps)))
    return path


def test_a_reversed_benchmark_trains_in_its_own_order(toy, tmp_path):
    sc, full = toy
    unchanged = api.run("l2", "toy", 0, epochs=1).record
    sc.benchmark = _bench(sc, reversed(list(full.train_stream)), full.test_stream)
    rec = api.run("l2", "toy", 0, epochs=1).record
    sc.benchmark = full
    # the same as the stream file written in the reversed order (a different code path: the file's own steps)
    written = api.run("l2", str(_reversed_toy_file(tmp_path)), 0, epochs=1).record
    assert [t["name"] for t in rec["tasks"]] == [t["name"] for t in written["tasks"]] == \
        [t["name"] for t in reversed(unchanged["tasks"])]
    for key in ("r1", "r10", "r10_ab", "acc"):
        assert rec["matrices"][key] == written["matrices"][key], key
    assert rec["matrices"]["r10"] != unchanged["matrices"]["r10"]
    assert rec["config"]["benchmark"]["order"] == [2, 1, 0]
    assert "benchmark" not in unchanged["config"] and rec["config_hash"] != unchanged["config_hash"]


def test_a_benchmark_without_a_step_trains_the_others(toy):
    sc, full = toy
    keep = [full.train_stream[0], full.train_stream[2]]
    sc.benchmark = _bench(sc, keep, [full.test_stream[2], full.test_stream[0]])    # test order does not matter
    rec = api.run("vanilla", "toy", 0, epochs=1).record
    assert [t["name"] for t in rec["tasks"]] == [sc.tasks[0].name, sc.tasks[2].name]
    assert len(rec["matrices"]["r10"]) == 3 and all(len(r) == 2 for r in rec["matrices"]["r10"])
    assert rec["config"]["benchmark"]["order"] == [0, 2]
    assert rec["summary"]["bwt_r10"] is not None


@pytest.mark.parametrize("case, message", [
    ("online", "both hold step 1"),
    ("mixed", "holds the pairs of task labels"),
    ("untested", "test stream has no experience of step 2"),
    ("untrained", "never trains"),
])
def test_benchmarks_that_cannot_be_placed_are_refused(toy, case, message):
    sc, full = toy
    train, test = list(full.train_stream), list(full.test_stream)
    if case == "online":
        sc.benchmark = _bench(sc, list(split_online_stream(full.train_stream, 20)), test)
    elif case == "mixed":
        sc.benchmark = benchmark_from_datasets(train=[train[0].dataset.concat(train[1].dataset)],
                                               test=[test[0].dataset])
    elif case == "untested":
        sc.benchmark = _bench(sc, train, [test[0], test[2]])
    else:
        sc.benchmark = _bench(sc, train[:2], test)
    with pytest.raises(BenchError, match=message):
        api.run("vanilla", "toy", 0, epochs=1)


def test_a_run_on_a_changed_benchmark_is_not_taken_for_the_stream_files(toy, tmp_path, capsys):
    sc, full = toy
    vb = benchmark_with_validation_stream(full, validation_size=0.25)
    sc.benchmark = benchmark_from_datasets(train=list(e.dataset for e in vb.train_stream),
                                           test=list(e.dataset for e in full.test_stream))
    api.run("vanilla", "toy", 0, epochs=1, save=True, out=str(tmp_path))
    sc.benchmark = full
    path = tmp_path / "toy" / "runs" / "vanilla" / "seed0.json"
    saved = json.loads(path.read_text())
    assert saved["config"]["benchmark"]["train"][0].startswith("train:192:")      # 75 % of 256 pairs
    # the command line plans the stream file's run: another hash, so it trains it instead of skipping
    assert run.main(["--stream", "toy", "--epochs", "1", "--methods", "vanilla", "--seeds", "1", "--out",
                     str(tmp_path), "--no-figures"]) == 0
    rerun = json.loads(path.read_text())
    assert "benchmark" not in rerun["config"] and rerun["config_hash"] != saved["config_hash"]
    assert rerun["timings"]["steps"][0]["iterations"] > saved["timings"]["steps"][0]["iterations"]


def test_annotate_puts_the_step_attributes_back(toy):
    sc, full = toy
    vb = annotate(benchmark_with_validation_stream(full, validation_size=0.25), sc)
    for name in ("train_stream", "valid_stream", "test_stream"):
        for j, exp in enumerate(getattr(vb, name)):
            assert exp.step == exp.task_label == j and exp.pair == sc.tasks[j].pair and exp.name == sc.tasks[j].name


def _evaluate_each_step(b, s, stream):
    s.eval(stream)
    for exp in b.benchmark.train_stream:
        s.train(exp)
        s.eval(stream)


def test_bridge_rows_are_keyed_by_the_steps_trained():
    want = api.run("vanilla", "toy", 0, epochs=2).record["matrices"]
    # Avalanche's periodic evaluation: after every epoch, the last one at the end of each experience
    b = bridge.Bridge("vanilla", stream="toy", seed=0, epochs=2)
    s = b.strategy(eval_every=1)
    s.eval(b.benchmark.test_stream)
    for exp in b.benchmark.train_stream:
        s.train(exp, eval_streams=[b.benchmark.test_stream])
    assert b.matrices() == want
    # without the zero-shot row, or with experiences never evaluated after: refused, not shifted or shortened
    b = bridge.Bridge("vanilla", stream="toy", seed=0, epochs=2)
    s = b.strategy()
    for exp in b.benchmark.train_stream:
        s.train(exp)
        s.eval(b.benchmark.test_stream)
    with pytest.raises(BenchError, match="not evaluated at row 0"):
        b.matrices()
    b = bridge.Bridge("vanilla", stream="toy", seed=0, epochs=2)
    s = b.strategy()
    s.eval(b.benchmark.test_stream)
    s.train(b.benchmark.train_stream)               # the whole stream in one call
    s.eval(b.benchmark.test_stream)
    with pytest.raises(BenchError, match="rows 1, 2"):
        b.matrices()


def test_bridge_trains_a_validation_benchmark_and_evaluates_its_validation_stream(toy):
    sc, full = toy
    b = bridge.Bridge("l2", stream="toy", seed=0, epochs=1)
    vb = benchmark_with_validation_stream(b.benchmark, validation_size=0.25)      # no step attributes
    s = b.strategy()
    s.eval(vb.valid_stream)
    s.eval(vb.test_stream)
    for exp in vb.train_stream:
        s.train(exp)
        s.eval(vb.valid_stream)
        s.eval(vb.test_stream)
    valid, test = b.matrices("valid"), b.matrices("test")
    assert valid["r10"] != test["r10"]
    # the runner on the same benchmark, its validation stream as the test stream: the same numbers
    sc.benchmark = benchmark_from_datasets(train=[e.dataset for e in vb.train_stream],
                                           test=[e.dataset for e in vb.valid_stream])
    rec = api.run("l2", "toy", 0, epochs=1).record
    assert rec["matrices"] == valid
    assert rec["config"]["benchmark"]["test"][0].startswith("train:64:")      # validation pairs: training rows


def test_bridge_refuses_experiences_out_of_its_order():
    b = bridge.Bridge("vanilla", stream="toy", seed=0, epochs=1)
    s = b.strategy()
    with pytest.raises(BenchError, match="holds step 2 .* has step 1"):
        s.train(b.benchmark.train_stream[1])


def test_stream_metrics_are_the_tables():
    b = bridge.Bridge("l2", stream="toy", seed=0, epochs=2, lr=0.03)     # a setting that forgets
    s = b.strategy()
    _evaluate_each_step(b, s, b.benchmark.test_stream)
    summary = api.run("l2", "toy", 0, epochs=2, lr=0.03).record["summary"]
    assert summary["bwt_r10"] < -0.3 and summary["forgetting_r10"] > 0.3
    logged = s.evaluator.get_last_metrics()
    for title, key in (("R@10", "r10"), ("Acc", "acc"), ("BWT_R10", "bwt_r10"), ("BWT_A", "bwt_acc"),
                       ("Forget_R10", "forgetting_r10")):
        assert logged[f"{title}/eval_phase/test_stream"] == pytest.approx(summary[key], abs=1e-9), title
    with pytest.raises(BenchError, match="unknown metric 'fwt'"):
        b.metrics(stream_keys=("fwt",))


def test_replay_strategy_with_a_per_batch_method_says_what_is_wrong():
    b = bridge.Bridge("dns", stream="toy", seed=0, epochs=1)
    s = Replay(model=b.model, optimizer=torch.optim.SGD(b.model.parameters(), lr=0.0), criterion=b.criterion,
               mem_size=60, train_mb_size=64, train_epochs=1, plugins=[b.plugin], evaluator=None)
    s.train(b.benchmark.train_stream[0])
    with pytest.raises(BenchError, match="another plugin replaced MethodPlugin's batches"):
        s.train(b.benchmark.train_stream[1])


def test_a_task_keeps_its_test_pairs_whatever_the_order(toy):
    from bench.evaluate import Evaluator
    sc, _ = toy
    ahead = Evaluator(sc.tasks, 0, n_pairs=50, repeats=2, align_pairs=20)
    back = Evaluator(list(reversed(sc.tasks)), 0, n_pairs=50, repeats=2, align_pairs=20)
    T = len(sc.tasks)
    for j in range(T):
        assert all(torch.equal(a, b) for a, b in zip(ahead.subsets[j], back.subsets[T - 1 - j]))
        assert torch.equal(ahead.align_idx[j], back.align_idx[T - 1 - j])

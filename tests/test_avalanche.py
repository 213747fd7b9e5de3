"""The project's stream is a genuine Avalanche benchmark that the runner consumes: experiences carry their
step's meaning, the task label Avalanche reads is the step, and a benchmark changed with Avalanche's own
utilities changes what is trained and evaluated."""
import pytest
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.task_aware import with_task_labels

from bench import api, streams
from bench.runner import evaluated_rows, get_scenario


def test_experiences_carry_their_step_and_the_task_label_is_the_step():
    sc = get_scenario(streams.load("toy"))
    for name in ("train_stream", "test_stream"):
        for j, exp in enumerate(getattr(sc.benchmark, name)):
            t = sc.tasks[j]
            assert exp.task_label == j == exp.step and exp.pair == t.pair and exp.source == t.step.source
            assert exp.name == t.name and exp.metrics == t.metrics
            item = exp.dataset[3]
            assert len(item) == 3 and item[-1] == j                 # Avalanche reads the last element
            a, b = t.pair
            f = (t.train_source if name == "train_stream" else t.test_source).features
            assert torch.equal(item[0], f[a][3]) and torch.equal(item[1], f[b][3])


@pytest.fixture
def subset_benchmark():
    """The toy stream's scenario with a benchmark of 40 training and 30 test pairs per step, made with
    Avalanche's own utilities (``subset``, ``benchmark_from_datasets``); the whole benchmark comes back after."""
    sc = get_scenario(streams.load("toy"))
    full = sc.benchmark
    sc.benchmark = with_task_labels(benchmark_from_datasets(
        train=[e.dataset.subset(range(0, 80, 2)) for e in full.train_stream],
        test=[e.dataset.subset(range(30)) for e in full.test_stream]))
    yield sc, full
    sc.benchmark = full


def test_an_avalanche_subset_changes_what_is_trained_and_evaluated(subset_benchmark):
    import methods
    from bench.config import LossConfig, TrainConfig
    from bench.heads import Heads
    from bench.trainer import Trainer
    sc, full = subset_benchmark
    assert [r.tolist() for r in evaluated_rows(sc)] == [list(range(30))] * len(sc.tasks)
    trainer = Trainer(sc, methods.get("vanilla")(), Heads(sc.in_dims, sc.head_dim), TrainConfig(), LossConfig(), 0)
    xa, xb = trainer.train_data(0)
    a, b = sc.tasks[0].pair
    assert torch.equal(xa, sc.tasks[0].train_source.features[a][0:80:2])
    assert torch.equal(xb, sc.tasks[0].train_source.features[b][0:80:2])
    sub = api.run("vanilla", "toy", 0, epochs=1, batch_size=8).record
    assert [s["iterations"] for s in sub["timings"]["steps"]] == [5] * len(sc.tasks)      # 40 pairs / 8
    sc.benchmark = full
    whole = api.run("vanilla", "toy", 0, epochs=1, batch_size=8).record
    assert all(s["iterations"] > 5 for s in whole["timings"]["steps"])
    # 30 test pairs instead of all of them: recall among fewer candidates is higher
    assert sub["matrices"]["r10"][0][1] > whole["matrices"]["r10"][0][1]

"""The Avalanche bridge: every registered method inside Avalanche's Naive trains what the runner trains; the
project's metrics report through Avalanche's EvaluationPlugin; replay through PairBuffer never mixes pairs;
the Avalanche plugins docs/avalanche.md calls safe run on a pair stream and do something."""
import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from avalanche.logging import TextLogger
from avalanche.training import Naive
from avalanche.training import plugins as P
from avalanche.training.plugins import EvaluationPlugin

import methods
from bench import api, bridge
from bench.errors import BenchError
from bench.loss import info_nce
from bench.pair_data import collate, pair_dataset

ROOT = Path(__file__).resolve().parents[1]


def naive_run(b, **kw):
    s = b.strategy(**kw)
    s.eval(b.benchmark.test_stream)
    for exp in b.benchmark.train_stream:
        s.train(exp)
        s.eval(b.benchmark.test_stream)
    return s


@pytest.mark.parametrize("method", methods.names())
def test_every_method_inside_naive_equals_the_runner(method):
    b = bridge.Bridge(method, stream="toy", seed=1)
    naive_run(b)
    rec = api.run(method, "toy", 1).record
    assert b.matrices() == rec["matrices"]          # bit for bit, every metric and row


@pytest.mark.parametrize("method", ["l2", "cflat", "dns-official"])
def test_inside_naive_with_the_official_protocol_clipping_and_schedule(method):
    """The official protocol clips gradients and decays the learning rate linearly: the plugin does both (a
    clipping norm that binds on toy's small gradients)."""
    b = bridge.Bridge(method, stream="toy", seed=0, protocol="official", clip_grad_norm=0.01)
    assert b.run.train.clip_grad_norm == 0.01 and b.run.train.schedule == "linear"
    naive_run(b)
    assert b.matrices() == api.run(method, "toy", 0, protocol="official", clip_grad_norm=0.01).record["matrices"]


def test_skipping_avalanches_eval_minibatches_keeps_the_metrics():
    b = bridge.Bridge("l2", stream="toy", seed=0)
    calls = []
    forward = b.model.forward
    b.model.forward = lambda x, t: (calls.append(b.model.training), forward(x, t))[1]
    naive_run(b, eval_minibatches=False)
    assert b.matrices() == api.run("l2", "toy", 0).record["matrices"]
    assert calls and all(calls)                     # the model ran in training only


def test_metrics_reach_avalanche_loggers_with_the_run_files_numbers():
    b = bridge.Bridge("l2", stream="toy", seed=0)
    out = io.StringIO()
    s = naive_run(b, loggers=[TextLogger(out)])
    rec = api.run("l2", "toy", 0).record
    metrics = s.evaluator.get_all_metrics()
    T = len(b.scenario.tasks)
    for key, label in (("r10", "R@10"), ("acc", "ZeroShotAcc"), ("r1", "R@1")):
        for j in range(T):
            name = f"{label}/eval_phase/test_stream/Exp{j:03d}"
            values = metrics[name][1] if name in metrics else []
            assert values == [row[j] for row in rec["matrices"][key] if row[j] is not None], name
    assert len(metrics["ZeroShotAcc/eval_phase/test_stream/Exp000"][1]) == T + 1
    # the alignment deviation of a task is reported from the evaluation after it was learned on
    dev = metrics["AlignDev/eval_phase/test_stream/Exp000"][1]
    assert dev == [row[0] for row in rec["matrices"]["align_dev"] if row[0] is not None] and dev[0] == 0.0
    assert "R@10/eval_phase/test_stream/Exp002" in out.getvalue()


def _mixing_probe(b):
    """Record, for every training batch, each pair group's rows and embeddings as PairInfoNCE saw them."""
    seen = []
    crit = b.criterion
    forward = crit.forward

    def recording(za, xb):
        groups, expected, n = [], 0.0, 0
        for label, idx in crit.model.groups:
            a, bm = b.model.pairs[label]
            xa_g = crit.model._last_x if idx is None else crit.model._last_x[idx]
            xb_g = xb if idx is None else xb[idx]
            own_a, own_b = b.heads[a](xa_g), b.heads[bm](xb_g)      # the group's own heads, at this iteration
            groups.append((label, xa_g, xb_g, (za if idx is None else za[idx]).detach(), own_a.detach()))
            if len(xa_g) >= 2:
                expected, n = expected + len(xa_g) * info_nce(own_a, own_b, crit.loss_cfg), n + len(xa_g)
        loss = forward(za, xb)
        # each pair contrasted with itself only: the loss is the size-weighted mean of per-pair InfoNCEs
        torch.testing.assert_close(loss.detach(), (expected / n).detach(), rtol=1e-6, atol=1e-6)
        seen.append(groups)
        return loss

    model_forward = b.model.forward

    def keep_x(x, task_labels):
        b.model._last_x = x
        return model_forward(x, task_labels)
    b.model.forward, crit.forward = keep_x, recording
    return seen


def _row_index(b, split="train"):
    """Every feature row of the stream -> (step, modality)."""
    index = {}
    for t in b.scenario.tasks:
        f = (t.train_source if split == "train" else t.test_source).features
        for m in t.pair:
            for i, row in enumerate(f[m]):
                index.setdefault(row.numpy().tobytes(), set()).add((t.index, m, i))
    return index


def test_avalanche_replay_through_pair_buffer_never_mixes_pairs():
    b = bridge.Bridge("vanilla", stream="toy", seed=0)
    seen = _mixing_probe(b)
    storage = bridge.PairBuffer(60, seed=0)
    torch.manual_seed(0)
    s = Naive(model=b.model, optimizer=torch.optim.AdamW(b.model.parameters(), lr=1e-3), criterion=b.criterion,
              train_mb_size=16, train_epochs=1, evaluator=EvaluationPlugin(loggers=[]),
              plugins=[P.ReplayPlugin(mem_size=60, storage_policy=storage, task_balanced_dataloader=True)])
    for exp in b.benchmark.train_stream:
        s.train(exp)
    index = _row_index(b)
    mixed = 0
    for groups in seen:
        mixed += len(groups) > 1
        for label, xa, xb, za, own in groups:
            a, bm = b.model.pairs[label]
            for ra, rb in zip(xa, xb):          # each row is its own pair's features, positives aligned
                sa = {i for j, m, i in index[ra.numpy().tobytes()] if (j, m) == (label, a)}
                sb = {i for j, m, i in index[rb.numpy().tobytes()] if (j, m) == (label, bm)}
                assert sa & sb, f"a row of step {label} is not a ({a}, {bm}) pair of that step"
            torch.testing.assert_close(za, own, rtol=0, atol=0)      # through its own head
    assert mixed > 10                           # replay batches held several pairs, each kept apart
    # the buffer: one group per step, equal shares, every item of its group's step
    assert sorted(storage.buffer_groups) == [0, 1, 2]
    assert [len(g.buffer) for g in storage.buffer_groups.values()] == [20, 20, 20]
    for label, g in storage.buffer_groups.items():
        assert set(g.buffer.targets_task_labels) == {label}


def test_pair_buffer_is_seeded_and_keeps_a_uniform_sample_when_it_shrinks():
    b = bridge.Bridge("vanilla", stream="toy", seed=0)

    def fill(seed):
        buf = bridge.PairBuffer(60, seed=seed)
        for exp in b.benchmark.train_stream:
            buf.post_adapt(None, exp)
        return {k: list(g.buffer.rows) for k, g in buf.buffer_groups.items()}

    one, again, other = fill(0), fill(0), fill(1)
    assert one == again and one != other
    buf = bridge.PairBuffer(60, seed=0)
    buf.post_adapt(None, b.benchmark.train_stream[0])
    first = list(buf.buffer_groups[0].buffer.rows)
    assert len(first) == 60
    buf.post_adapt(None, b.benchmark.train_stream[1])
    assert list(buf.buffer_groups[0].buffer.rows) == first[:30]      # shrinking keeps the drawn order's prefix


def test_pairs_of_different_widths_share_a_batch():
    """The collate pads narrower rows; PairModel cuts them back: each row's embedding is its head's."""
    from bench.heads import Heads
    heads = Heads({"text": 6, "audio": 4, "video": 6}, out_dim=6)
    model = bridge.PairModel(heads, [("text", "video"), ("audio", "text")])
    d0 = pair_dataset(torch.randn(5, 6), torch.randn(5, 6), 0, "train")
    d1 = pair_dataset(torch.randn(5, 4), torch.randn(5, 6), 1, "train")
    items = [d0[0], d1[0], d0[1], d1[1]]
    xa, xb, t = collate(items)
    assert xa.shape == (4, 6) and t.tolist() == [0, 1, 0, 1] and bool((xa[1, 4:] == 0).all())
    za = model(xa, t)
    torch.testing.assert_close(za[1], heads["audio"](d1[0][0]))
    torch.testing.assert_close(za[0], heads["text"](d0[0][0]))
    loss = bridge.PairInfoNCE(model, api.plan_run("vanilla", "toy").loss)(za, xb)
    assert loss.isfinite()


SAFE = {
    "ReplayPlugin+PairBuffer": lambda: P.ReplayPlugin(mem_size=60, storage_policy=bridge.PairBuffer(60)),
    "EWCPlugin": lambda: P.EWCPlugin(ewc_lambda=100.0),
    "SynapticIntelligencePlugin": lambda: P.SynapticIntelligencePlugin(si_lambda=100.0),
    "MASPlugin": lambda: P.MASPlugin(lambda_reg=100.0),
    "RWalkPlugin": lambda: P.RWalkPlugin(ewc_lambda=100.0),
    "AGEMPlugin": lambda: P.AGEMPlugin(patterns_per_experience=50, sample_size=32),
    "GEMPlugin": lambda: P.GEMPlugin(patterns_per_experience=50, memory_strength=0.5),
}


def _plain_run(plugins):
    b = bridge.Bridge("vanilla", stream="toy", seed=0)
    seen = _mixing_probe(b)
    torch.manual_seed(0)
    s = Naive(model=b.model, optimizer=torch.optim.AdamW(b.model.parameters(), lr=1e-3), criterion=b.criterion,
              train_mb_size=32, train_epochs=2, evaluator=EvaluationPlugin(loggers=[]), plugins=plugins)
    for exp in b.benchmark.train_stream:
        s.train(exp)
    return torch.cat([p.detach().flatten() for p in b.heads.parameters()]), seen, b


@pytest.fixture(scope="module")
def plain():
    return _plain_run([])[0]


@pytest.mark.parametrize("name", list(SAFE))
def test_safe_avalanche_plugins_run_on_pairs_and_act(name, plain):
    weights, seen, b = _plain_run([SAFE[name]()])
    assert bool(weights.isfinite().all())
    assert (weights - plain).norm() > 1e-3            # the plugin changed what was learned
    for groups in seen:
        for _label, _xa, _xb, za, own in groups:
            torch.testing.assert_close(za, own, rtol=0, atol=0)


def test_bridge_refuses_what_would_give_wrong_results():
    b = bridge.Bridge("er", stream="toy", seed=0)
    s = Naive(model=b.model, optimizer=torch.optim.SGD(b.model.parameters(), lr=0.0), criterion=b.criterion,
              train_mb_size=7, train_epochs=1, evaluator=EvaluationPlugin(loggers=[]), plugins=[b.plugin])
    with pytest.raises(BenchError, match="train_mb_size=7"):
        s.train(b.benchmark.train_stream[0])
    # er's hooks see one pair per batch: a replay loader installed after the bridge's would mix them
    b = bridge.Bridge("er", stream="toy", seed=0)
    s = b.strategy(plugins=[P.ReplayPlugin(mem_size=60, storage_policy=bridge.PairBuffer(60))])
    s.train(b.benchmark.train_stream[0])
    with pytest.raises(BenchError, match="one pair per batch"):
        s.train(b.benchmark.train_stream[1])
    # evaluating other test pairs than the evaluator's
    b = bridge.Bridge("vanilla", stream="toy", seed=0)
    s = b.strategy()
    with pytest.raises(BenchError, match="holds other pairs than the test stream"):
        s.eval(_subset_stream(b))
    with pytest.raises(BenchError, match="unknown metric 'r3'"):
        b.metrics(("r3",))


def _subset_stream(b):
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    bm = with_task_labels(benchmark_from_datasets(test=[e.dataset.subset(range(30)) for e in b.benchmark.test_stream]))
    return bm.test_stream


def test_example_script_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "avalanche_naive.py"), "--stream", "toy",
                          "--method", "l2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "equal to the runner's: True" in out.stdout

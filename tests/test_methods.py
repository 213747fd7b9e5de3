"""Registry, the small methods' mechanisms, per-pair batching, and the README's worked example."""
import re
from pathlib import Path

import pytest
import torch
from conftest import run_method, scalar

import methods
from bench import streams
from bench.errors import BenchError
from bench.heads import Heads
from bench.loss import LossConfig
from bench.trainer import TrainConfig, epoch_batches
from methods.l2 import L2Anchor

ROOT = Path(__file__).resolve().parent.parent


def test_registry_order_and_lookup():
    names = methods.names()
    assert names[0] == "frozen" and names[-1] == "joint"
    assert names.index("vanilla") < names.index("dns") < names.index("dns-official")
    with pytest.raises(BenchError, match="unknown method 'x'"):
        methods.get("x")


def test_every_method_cites_and_explains_itself():
    for name, cls in methods.registry().items():
        doc = cls.__doc__ or ""
        assert cls.describe(), name
        assert re.search(r"(19|20)\d\d", doc), f"{name}: docstring must cite its paper (year)"


def test_option_parsing_by_type():
    m = methods.get("dns")(lambda_min="0.5", left_lambda_min="none", project="gradient")
    o = m.options
    assert o.lambda_min == 0.5 and o.left_lambda_min is None and o.project == "gradient"
    # an option whose default is None declares its type: a seed stays an integer, a temperature a float
    assert methods.get("er").resolve({"seed": "3"})["seed"] == 3
    assert isinstance(methods.get("er").resolve({"seed": "3"})["seed"], int)
    assert methods.get("lwf").resolve({"temperature": "2"})["temperature"] == 2.0
    with pytest.raises(BenchError, match="expects an integer"):
        methods.get("er").resolve({"seed": "1.5"})


def test_options_are_kept_apart_from_state():
    m = methods.get("dns")()
    with pytest.raises(AttributeError, match="is an option"):
        m.lambda_min = 0.3
    with pytest.raises(AttributeError, match="read-only"):
        m.options.lambda_min = 0.3
    assert m.options.lambda_min == 0.01
    with pytest.raises(BenchError, match="has no option"):
        methods.get("vanilla")(strength="1")


def test_l2_penalty_is_zero_at_the_anchor_and_grows_away_from_it():
    heads = Heads({"text": 4, "audio": 4}, 4)
    l2 = L2Anchor(strength=2.0)
    ctx = type("C", (), {"pair": ("text", "audio"), "heads": heads})()
    assert scalar(l2.penalty(ctx)) == 0.0                     # nothing anchored yet: a new modality is free
    l2.after_training_exp(ctx)
    assert scalar(l2.penalty(ctx)) == 0.0
    with torch.no_grad():
        heads["text"].weight.add_(0.1)
    # 2/2 * 16 entries * 0.1² = 0.16
    assert scalar(l2.penalty(ctx)) == pytest.approx(0.16, rel=1e-5)


def test_l2_moves_old_alignment_scores_less_than_vanilla(two_step):
    spec = streams.load(str(two_step))
    train = TrainConfig(epochs=3, lr=1e-2)
    dev = {m: run_method(spec, m, p, 0, train, LossConfig())["matrices"]["align_dev"][2][0]
           for m, p in (("vanilla", {}), ("l2", {"strength": 10.0}))}
    assert dev["l2"] < 0.5 * dev["vanilla"]


def test_batches_never_mix_pairs_and_cover_each_task():
    gen = torch.Generator().manual_seed(0)
    batches = epoch_batches([130, 70], 32, gen)
    seen = {0: [], 1: []}
    for slot, idx in batches:
        assert len(idx) >= 2
        seen[slot].extend(idx.tolist())
    assert sorted(seen[0]) == list(range(130)) and sorted(seen[1]) == list(range(70))
    assert [s for s, _ in batches] != sorted(s for s, _ in batches)     # tasks interleaved


def test_joint_trains_on_every_seen_pair(two_step):
    spec = streams.load(str(two_step))
    r = run_method(spec, "joint", {}, 0, TrainConfig(epochs=1), LossConfig())
    its = [s["iterations"] for s in r["timings"]["steps"]]
    assert its[1] > its[0]                                   # step 2 iterates over steps 1 and 2


def test_readme_worked_example_is_the_real_method_file():
    readme = (ROOT / "README.md").read_text()
    code = (ROOT / "methods" / "l2.py").read_text()
    assert f"```python\n{code}```" in readme


def test_readme_lists_every_method():
    readme = (ROOT / "README.md").read_text()
    for name in methods.names():
        assert f"| `{name}` |" in readme, name


def test_trainer_supports_closure_based_optimisers(two_step):
    """A method with ``uses_closure`` gets ``optimizer.step(closure)``; the closure redoes forward, the
    method's loss terms and backward each time it is called."""
    from bench.method import Method
    from bench.runner import get_scenario
    from bench.trainer import Trainer

    class TwiceEvaluated:
        def __init__(self, opt):
            self.opt, self.calls = opt, 0

        def zero_grad(self, set_to_none=True):
            self.opt.zero_grad(set_to_none=set_to_none)

        def step(self, closure):
            for _ in range(2):
                self.calls += 1
                closure()
            self.opt.step()

    class ClosureMethod(Method):
        uses_closure = True
        terms = 0

        def wrap_optimizer(self, optimizer, ctx):
            self.wrapped = TwiceEvaluated(optimizer)
            return self.wrapped

        def before_backward(self, ctx):
            self.terms += 1
            ctx.loss = ctx.loss + 0.0 * ctx.za.sum()

    spec = streams.load(str(two_step))
    scenario = get_scenario(spec)
    heads = Heads(scenario.in_dims, 24)
    m = ClosureMethod()
    rec = Trainer(scenario, m, heads, TrainConfig(epochs=1), LossConfig(), seed=0).train_experience(0)
    assert rec["iterations"] > 0
    assert m.wrapped.calls == m.terms == 2 * rec["iterations"]
    assert not torch.equal(heads["text"].weight.detach(), torch.eye(24))

"""The order in which a method's hooks run, written down once and checked directly (Avalanche's style): a
recording method logs every hook with what it sees, in the runner's loop and inside an Avalanche strategy
through ``bench.bridge`` (which calls the trainer's per-batch phases at Avalanche's hook points)."""
import pytest
import torch

from bench.method import HOOKS, Method

EPOCHS = 2


class Recording(Method):
    """Logs (hook, step, learning rate, whether the trained parameters have gradients, whether clipping set
    the grad scale)."""

    def __init__(self):
        super().__init__()
        self.log = []

    def _note(self, hook, ctx):
        lr = ctx.optimizer.param_groups[0]["lr"] if ctx.optimizer is not None else None
        trained = [p for g in ctx.optimizer.param_groups for p in g["params"]] if ctx.optimizer is not None else []
        grads = any(p.grad is not None for p in trained)
        self.log.append((hook, ctx.step, lr, grads, ctx.grad_scale is not None))

    def before_training_exp(self, ctx):
        self._note("before_training_exp", ctx)

    def before_backward(self, ctx):
        assert ctx.loss.requires_grad and ctx.za is not None and ctx.xb is not None
        self._note("before_backward", ctx)

    def after_backward(self, ctx):
        self._note("after_backward", ctx)

    def before_update(self, ctx):
        self._note("before_update", ctx)

    def after_update(self, ctx):
        self._note("after_update", ctx)

    def after_training_exp(self, ctx):
        self._note("after_training_exp", ctx)


def expected(batches_per_step: list[int]) -> list[tuple[str, int]]:
    """Per step: before_training_exp, the four per-batch hooks in order for every batch, after_training_exp."""
    out = []
    for step, n in enumerate(batches_per_step):
        out.append(("before_training_exp", step))
        out += [(h, step) for _ in range(n * EPOCHS)
                for h in ("before_backward", "after_backward", "before_update", "after_update")]
        out.append(("after_training_exp", step))
    return out


def _runner_log(run):
    from bench.runner import make_heads, run_scenario
    from bench.trainer import Trainer, n_batches
    run, scenario = run_scenario(run)
    rec = Recording()
    torch.manual_seed(run.seed)
    trainer = Trainer(scenario, rec, make_heads(run, scenario), run.train, run.loss, run.seed)
    for step in range(len(scenario.tasks)):
        trainer.train_experience(step)
    sizes = [n_batches([len(trainer.train_data(j)[0])], run.train.batch_size) for j in range(len(scenario.tasks))]
    return rec.log, sizes


def test_every_hook_is_a_hook_the_contract_names():
    assert set(HOOKS) == {n for n in vars(Recording) if not n.startswith("_") and n != "__init__"}


@pytest.mark.parametrize("protocol", ["paper", "official"])
def test_hooks_run_in_the_documented_order_with_the_documented_state(protocol):
    from bench.api import plan_run
    run = plan_run("vanilla", "toy", 0, epochs=EPOCHS, protocol=protocol, lr=0.01)
    log, sizes = _runner_log(run)
    assert [(h, s) for h, s, *_ in log] == expected(sizes)
    per_batch = [e for e in log if e[0] not in ("before_training_exp", "after_training_exp")]
    after = [e for e in per_batch if e[0] != "before_backward"]
    # gradients are zeroed before the forward pass and exist from after_backward on
    assert not any(grads for h, _, _, grads, _ in per_batch if h == "before_backward")
    assert all(grads for *_, grads, _ in after)
    # clipping happens right after the backward pass, before any method's gradient hook sees the gradients
    assert not per_batch[0][4] and all(scaled == (protocol == "official") for *_, scaled in after)
    if protocol == "official":
        # the schedule steps after after_update: the hooks of one batch see one learning rate, the next a lower one
        lrs = [lr for h, s, lr, *_ in per_batch if s == 0]
        quads = [lrs[i:i + 4] for i in range(0, len(lrs), 4)]
        assert all(len(set(q)) == 1 for q in quads)
        assert all(a[0] > b[0] for a, b in zip(quads, quads[1:]))


@pytest.mark.parametrize("protocol", ["paper", "official"])
def test_inside_an_avalanche_strategy_the_hooks_run_in_the_same_order_with_the_same_state(protocol):
    pytest.importorskip("avalanche")
    from bench.bridge import Bridge, MethodPlugin
    b = Bridge("vanilla", "toy", 0, epochs=EPOCHS, protocol=protocol, lr=0.01)
    runner, _ = _runner_log(b.run)
    b.method = Recording()
    b.plugin = MethodPlugin(b)
    strategy = b.strategy(eval_minibatches=False)
    for exp in b.benchmark.train_stream:
        strategy.train(exp)
    assert b.plugin.trainer.method is b.method
    assert b.method.log == runner

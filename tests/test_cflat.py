"""C-Flat: the wrapper's step differs from the base step, evaluates the closure the documented number of times,
puts back θ before the base step, uses the paper's combination g1 + λ(g3 − g2), and reduces to the base
optimiser exactly at ρ = λ = 0."""
import pytest
import torch

from bench import streams
from bench.heads import Heads
from bench.loss import LossConfig, info_nce
from bench.run import main
from bench.runner import get_scenario
from bench.trainer import TrainConfig, Trainer
from methods.cflat import CLOSURE_CALLS, VARIANTS, CFlat, CFlatOptimizer

D = 8
PAIR = ("text", "audio")


def _setup(seed=0):
    heads = Heads({m: D for m in PAIR}, D)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin in heads.linears.values():
            lin.weight.add_(0.3 * torch.randn(D, D, generator=g))
    xa, xb = torch.randn(16, D, generator=g), torch.randn(16, D, generator=g)
    return heads, xa, xb


def _closure(heads, opt, xa, xb, cfg=LossConfig()):  # noqa: B008 - a frozen dataclass, never mutated
    def closure():
        loss = info_nce(heads[PAIR[0]](xa), heads[PAIR[1]](xb), cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss
    return closure


def _params(heads):
    return heads.parameters_of(PAIR)


def _snapshot(heads):
    return [p.detach().clone() for p in _params(heads)]


def _wrapped(heads, base="adamw", lr=1e-2, **kw):
    params = _params(heads)
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=1e-3, foreach=False) if base == "adamw"
           else torch.optim.SGD(params, lr=lr, foreach=False))
    return CFlatOptimizer(opt, **kw), opt


@pytest.mark.slow
def test_step_differs_from_the_base_optimisers_step():
    heads_c, xa, xb = _setup()
    heads_v, _, _ = _setup()
    cflat, _ = _wrapped(heads_c, rho=0.2, lam=0.2)
    _, base = _wrapped(heads_v, rho=0.0, lam=0.0)
    cflat.step(_closure(heads_c, cflat, xa, xb))
    closure = _closure(heads_v, base, xa, xb)
    closure()
    base.step()
    diffs = [float((p - q).detach().abs().max()) for p, q in zip(_params(heads_c), _params(heads_v))]
    assert max(diffs) > 1e-6


@pytest.mark.parametrize("variant", VARIANTS)
def test_closure_is_called_the_documented_number_of_times(variant):
    heads, xa, xb = _setup()
    opt, _ = _wrapped(heads, rho=0.2, lam=0.2, variant=variant)
    calls = []
    inner = _closure(heads, opt, xa, xb)

    def counting():
        calls.append(1)
        return inner()

    for k in range(3):
        opt.step(counting)
        assert len(calls) == CLOSURE_CALLS[variant] * (k + 1)
    assert opt.closure_calls == len(calls)
    assert CLOSURE_CALLS["paper"] == 4


def _grad_at(heads, values, xa, xb):
    """∇L at the given parameter values, computed directly (no wrapper)."""
    with torch.no_grad():
        for p, v in zip(_params(heads), values):
            p.copy_(v)
    loss = info_nce(heads[PAIR[0]](xa), heads[PAIR[1]](xb), LossConfig())
    return [g.detach() for g in torch.autograd.grad(loss, _params(heads))]


def _unit(vs, rho):
    n = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in vs]))
    return [rho * v / n for v in vs]


def test_theta_is_restored_before_the_base_step_and_the_gradient_is_the_papers_combination():
    rho, lam = 0.3, 0.5
    heads, xa, xb = _setup()
    theta = _snapshot(heads)
    opt, _ = _wrapped(heads, base="sgd", lr=0.0, rho=rho, lam=lam)
    opt.step(_closure(heads, opt, xa, xb))
    # an SGD step of lr 0 changes nothing: the parameters are exactly θ again after three perturbations
    assert all(torch.equal(p.detach(), t) for p, t in zip(_params(heads), theta))
    got = [p.grad.clone() for p in _params(heads)]
    # the paper's gradient, computed by hand
    g0 = _grad_at(heads, theta, xa, xb)
    g1 = _grad_at(heads, [t + e for t, e in zip(theta, _unit(g0, rho))], xa, xb)
    d1 = _unit([a - b for a, b in zip(g1, g0)], rho)
    p1 = [t + e for t, e in zip(theta, d1)]
    g2 = _grad_at(heads, p1, xa, xb)
    g3 = _grad_at(heads, [p + e for p, e in zip(p1, _unit(g2, rho))], xa, xb)
    want = [a + lam * (c - b) for a, b, c in zip(g1, g2, g3)]
    for g, w, _a in zip(got, want, g1):
        assert torch.allclose(g, w, atol=1e-6, rtol=1e-5)
    # and the flatness term is not negligible: the combination differs from SAM's g1
    assert max(float((w - a).abs().max()) for w, a in zip(want, g1)) > 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_rho_and_lambda_zero_is_the_base_optimiser_exactly(variant):
    heads_c, xa, xb = _setup()
    heads_v, _, _ = _setup()
    cflat, _ = _wrapped(heads_c, rho=0.0, lam=0.0, variant=variant)
    _, base = _wrapped(heads_v, rho=0.0, lam=0.0)
    for k in range(4):
        g = torch.Generator().manual_seed(10 + k)
        xa, xb = torch.randn(16, D, generator=g), torch.randn(16, D, generator=g)
        cflat.step(_closure(heads_c, cflat, xa, xb))
        _closure(heads_v, base, xa, xb)()
        base.step()
    assert all(torch.equal(p.detach(), q.detach()) for p, q in zip(_params(heads_c), _params(heads_v)))
    assert not torch.equal(heads_v[PAIR[0]].weight.detach(), _setup()[0][PAIR[0]].weight.detach())


@pytest.mark.slow
def test_trainer_runs_cflat_with_closures_and_records_the_count(two_step):
    scenario = get_scenario(streams.load(str(two_step)))
    heads = Heads(scenario.in_dims, 24)
    m = CFlat()
    tr = Trainer(scenario, m, heads, TrainConfig(epochs=1, lr=1e-2), LossConfig(), seed=0)
    iters = sum(tr.train_experience(s)["iterations"] for s in range(2))
    state = m.state_summary()
    assert state["optimizer_steps"] == iters > 0
    assert state["closure_calls"] == 4 * iters
    assert not torch.equal(heads["text"].weight.detach(), torch.eye(24))


def test_cflat_follows_the_linear_schedule(two_step):
    """The schedule drives the wrapped base optimiser (it once crashed: LambdaLR refuses a non-Optimizer)."""
    scenario = get_scenario(streams.load(str(two_step)))
    m = CFlat()
    tr = Trainer(scenario, m, Heads(scenario.in_dims, 24), TrainConfig(epochs=2, lr=1e-2, schedule="linear"),
                 LossConfig(), seed=0)
    assert tr.train_experience(0)["iterations"] > 0
    assert tr.ctx.optimizer.param_groups[0]["lr"] == 0.0          # decayed to zero by the step's end


def test_every_closure_evaluation_is_clipped(two_step):
    """With --clip-grad-norm, each of C-Flat's closure evaluations clips the gradient before the method's
    hooks see it (the trainer's closure owns the clipping, as the plain loop does)."""
    norms = []

    class Recording(CFlat):
        def after_backward(self, ctx):
            grads = [p.grad.norm() for p in tr.plan.clipped if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack(grads)).item())
    scenario = get_scenario(streams.load(str(two_step)))
    tr = Trainer(scenario, Recording(), Heads(scenario.in_dims, 24), TrainConfig(epochs=1, lr=1e-2, clip_grad_norm=1e-3),
                 LossConfig(), seed=0)
    iters = tr.train_experience(0)["iterations"]
    assert len(norms) == 4 * iters and max(norms) <= 1e-3 * (1 + 1e-4)


def test_cli_runs_cflat(tmp_path):
    assert main(["--methods", "cflat", "--stream", "toy", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path),
                 "--no-figures", "--threads", "1"]) == 0
    assert list(tmp_path.rglob("cflat/seed0.json"))

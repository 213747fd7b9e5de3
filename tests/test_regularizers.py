"""EWC, online EWC, SI and MAS: penalties, importances, the hot-path gradient, and stability on a real run."""
import pytest
import torch
from conftest import run_method, scalar

import methods
from bench import run, runner, streams
from bench.heads import Heads
from bench.loss import LossConfig
from bench.trainer import TrainConfig, Trainer

NAMES = ["ewc", "ewc-online", "si", "mas"]
# strengths high enough on the two_step stream (lr 1e-2, 3 epochs) to show the mechanism
STRONG = {"ewc": 1e4, "ewc-online": 1e4, "si": 10.0, "mas": 100.0}


def _trained(two_step, name, steps=1, **params):
    """A trainer on two_step that has run ``steps`` steps of method ``name`` (1 epoch, lr 1e-2)."""
    scenario = runner.get_scenario(streams.load(str(two_step)))
    torch.manual_seed(0)
    m = methods.get(name)(**params)
    heads = Heads(scenario.in_dims, out_dim=max(scenario.in_dims.values()), seed=0)
    tr = Trainer(scenario, m, heads, TrainConfig(epochs=1, lr=1e-2), LossConfig(), seed=0)
    for s in range(steps):
        tr.train_experience(s)
    return tr, m, scenario


def _at_step(tr, scenario, step):
    """The trainer's context pointed at ``step`` (as when that step starts)."""
    ctx = tr.ctx
    ctx.step, ctx.task = step, scenario.tasks[step]
    return ctx


@pytest.mark.parametrize("name", NAMES)
def test_penalty_zero_at_anchor_positive_away_and_new_modality_free(two_step, name):
    tr, m, scenario = _trained(two_step, name, strength=1.0)
    ctx = _at_step(tr, scenario, 1)                         # step 2: (text, audio); text anchored, audio new
    assert ctx.pair == ("text", "audio")
    assert scalar(m.penalty(ctx)) == 0.0                    # at the anchor
    with torch.no_grad():
        ctx.heads["audio"].weight.add_(0.1)
    assert scalar(m.penalty(ctx)) == 0.0                    # a modality no step trained is free
    with torch.no_grad():
        ctx.heads["text"].weight.add_(0.1)
        ctx.heads["text"].bias.sub_(0.1)
    assert scalar(m.penalty(ctx)) > 0.0
    video = [p.detach().clone() for p in ctx.heads["video"].parameters()]
    tr.train_experience(1)                                  # heads outside the pair do not move
    assert all(torch.equal(a, b) for a, b in zip(video, ctx.heads["video"].parameters()))


@pytest.mark.parametrize("name", NAMES)
def test_importances_nonzero_for_the_trained_heads_only(two_step, name):
    _, m, _ = _trained(two_step, name)
    assert m.terms("audio") == []
    for mod in ("text", "video"):
        (term,) = m.terms(mod)
        assert len(term) == 2                               # weight and bias
        for imp, anchor in term:
            assert imp.shape == anchor.shape
            assert torch.isfinite(imp).all() and (imp >= 0).all()
            assert (imp > 0).float().mean() > 0.9           # importances everywhere, not a silent no-op
    assert m.state_summary()["importance"][0]["pair"] == ["text", "video"]


@pytest.mark.parametrize("name", NAMES)
def test_hot_path_gradient_equals_autograd_of_the_penalty(two_step, name):
    tr, m, scenario = _trained(two_step, name, steps=2, strength=3.0)   # text trained twice: EWC has 2 terms
    if name == "ewc":
        assert len(m.terms("text")) == 2
    ctx = _at_step(tr, scenario, 0)                         # (text, video): both anchored
    m.before_training_exp(ctx)
    g = torch.Generator().manual_seed(1)
    params = [p for mod in ctx.pair for p in ctx.heads[mod].parameters()]
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    expected = torch.autograd.grad(m.penalty(ctx), params)
    for p in params:
        p.grad = torch.zeros_like(p)
    m.after_backward(ctx)
    for p, e in zip(params, expected):
        assert torch.allclose(p.grad, e, rtol=1e-4, atol=1e-7 * float(e.abs().max()))
        assert e.abs().max() > 0


def test_si_importance_is_not_a_silent_no_op(two_step):
    """Avalanche 0.6.0's SI snapshots a view of the live weights, so Δθ ≡ 0 and ω ≡ 0 on CPU."""
    tr, m, _ = _trained(two_step, "si")
    for mod in ("text", "video"):
        for omega in m.big_omega[mod]:
            assert (omega > 0).float().mean() > 0.9
    for mod, bufs in m.buffers.items():
        for p, (omega, prev, _, _) in zip(tr.heads[mod].parameters(), bufs):
            assert omega.abs().sum() > 0                    # ω of the step: the loss went down along the path
            assert prev.data_ptr() != p.data_ptr()          # the snapshot is a copy, not a view of the weights
            assert not torch.equal(prev, p.detach())        # ... taken before the last update moved them


@pytest.mark.parametrize("omega_grad", ["task", "total"])
def test_si_omega_is_minus_gradient_times_actual_change(two_step, omega_grad):
    tr, m, scenario = _trained(two_step, "si", strength=2.0, omega_grad=omega_grad)
    ctx = _at_step(tr, scenario, 1)                         # text anchored: the penalty is active
    m.before_training_exp(ctx)
    lin = ctx.heads["text"]
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        lin.weight.add_(0.1 * torch.randn(lin.weight.shape, generator=g))     # away from the anchor
    for p in (p for mod in ctx.pair for p in ctx.heads[mod].parameters()):
        p.grad = torch.randn(p.shape, generator=g)
    task_grad = lin.weight.grad.clone()
    m.after_backward(ctx)                                   # adds the penalty's gradient
    total_grad = lin.weight.grad.clone()
    assert not torch.allclose(task_grad, total_grad)
    m.before_update(ctx)
    step = torch.randn(lin.weight.shape, generator=g) * 1e-2
    with torch.no_grad():
        lin.weight.add_(step)                               # what an optimiser step would do, in place
    m.after_update(ctx)
    omega = m.buffers["text"][0][0]
    used = task_grad if omega_grad == "task" else total_grad
    assert torch.allclose(omega, -used * step, rtol=1e-4, atol=1e-8)


def test_mas_per_sample_importance_matches_the_closed_form(two_step):
    """For a linear head, |∂‖Wx + b‖²/∂W| = 2|z||x|ᵀ per sample: importance_batch=1 is the paper's definition."""
    _, m, scenario = _trained(two_step, "mas", importance_batch=1)
    tr, _, _ = _trained(two_step, "vanilla")                # same training (MAS adds no penalty on step 1)
    xa, _ = tr.train_data(0)
    lin = tr.heads["text"]
    with torch.no_grad():
        z = lin(xa)
        w_expected = 2 * z.abs().T @ xa.abs() / len(xa)
        b_expected = 2 * z.abs().mean(0)
    w, b = m.omega["text"]
    assert torch.allclose(w, w_expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(b, b_expected, rtol=1e-4, atol=1e-6)


def test_mas_and_online_ewc_accumulate_as_specified(two_step):
    _, mas, _ = _trained(two_step, "mas", steps=2)
    logs = mas.state_summary()["importance"]
    first, second = logs[0]["mean_importance"]["text"], logs[1]["mean_importance"]["text"]
    for k, om in enumerate(mas.omega["text"]):              # the authors' rule: each step's Ω is added
        assert float(om.mean()) == pytest.approx(first[k] + second[k], rel=1e-4)
    _, avg, _ = _trained(two_step, "mas", steps=2, accumulate="average")
    logs = avg.state_summary()["importance"]
    n1 = n2 = 200                                           # two_step: 200 training pairs per source
    first, second = logs[0]["mean_importance"]["text"], logs[1]["mean_importance"]["text"]
    for k, om in enumerate(avg.omega["text"]):              # running average weighted by samples
        assert float(om.mean()) == pytest.approx((n1 * first[k] + n2 * second[k]) / (n1 + n2), rel=1e-4)
    assert avg.count["text"] == 400 and avg.count["video"] == 200

    tr, online, _ = _trained(two_step, "ewc-online", steps=2, gamma=0.5)
    logs = online.state_summary()["importance"]
    first, second = logs[0]["mean_importance"]["text"], logs[1]["mean_importance"]["text"]
    (term,) = online.terms("text")                          # one running Fisher, anchored at the latest values
    for k, (f, _anchor) in enumerate(term):
        assert float(f.mean()) == pytest.approx(0.5 * first[k] + second[k], rel=1e-4)
    assert all(torch.equal(a, p) for (_, a), p in zip(term, tr.heads["text"].parameters()))


_VANILLA = {}


def _matrices(spec, name, params):
    r = run_method(spec, name, params, 0, TrainConfig(epochs=3, lr=1e-2), LossConfig())
    return r["matrices"]


@pytest.mark.parametrize("name", NAMES)
def test_moves_old_alignment_scores_less_than_vanilla(two_step, name):
    spec = streams.load(str(two_step))
    if "m" not in _VANILLA:
        _VANILLA["m"] = _matrices(spec, "vanilla", {})
    vanilla = _VANILLA["m"]
    mats = _matrices(spec, name, {"strength": STRONG[name]})
    assert mats["align_dev"][2][0] < 0.5 * vanilla["align_dev"][2][0]
    assert mats["r10"][2][1] > mats["r10"][0][1]            # and step 2 still learns its pair


@pytest.mark.parametrize("name", NAMES)
def test_runs_from_the_command_line(tmp_path, name):
    assert run.main(["--methods", name, "--stream", "toy", "--seeds", "1", "--epochs", "1",
                     "--out", str(tmp_path), "--no-figures", "--threads", "1"]) == 0
    assert (tmp_path / "toy" / "runs" / name / "seed0.json").exists()


def test_ewc_fisher_is_the_squared_gradient_and_the_penalty_has_its_half(two_step):
    """With one batch holding the whole step (InfoNCE is order-invariant), EWC's diagonal Fisher is the
    elementwise square of the full-batch gradient, and the penalty is λ/2 · Σ F (θ − θ*)²."""
    from bench.loss import info_nce
    tr, m, scenario = _trained(two_step, "ewc", fisher_batch=10_000, strength=3.0)
    xa, xb = tr.train_data(0)
    heads = tr.heads
    params = list(heads["text"].parameters()) + list(heads["video"].parameters())
    grads = torch.autograd.grad(info_nce(heads["text"](xa), heads["video"](xb), LossConfig()), params)
    fisher = m.steps[0]["text"] + m.steps[0]["video"]
    for (f, anchor), g, p in zip(fisher, grads, params):
        assert torch.allclose(f, g * g, rtol=1e-3, atol=1e-5 * float((g * g).max()))
        assert torch.equal(anchor, p.detach())
    ctx = _at_step(tr, scenario, 0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in params:
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    expected = 0.5 * 3.0 * sum((f * (p - a).pow(2)).sum() for (f, a), p in zip(fisher, params))
    assert scalar(m.penalty(ctx)) == pytest.approx(scalar(expected), rel=1e-5)


def test_si_accumulates_omega_over_steps(two_step):
    _, si, _ = _trained(two_step, "si", steps=2)
    logs = si.state_summary()["importance"]
    first, second = logs[0]["mean_importance"]["text"], logs[1]["mean_importance"]["text"]
    for k, om in enumerate(si.big_omega["text"]):          # text trained at both steps: Ω₁ + Ω₂
        assert float(om.mean()) == pytest.approx(first[k] + second[k], rel=1e-4)

"""Replay baselines (er, agem, gem): the pair buffer, the two projections, and their effect on real runs."""
import numpy as np
import pytest
import torch
from conftest import run_method

from bench import run, streams
from bench.heads import Heads
from bench.loss import LossConfig
from bench.method import Context
from bench.trainer import TrainConfig
from methods._buffer import PairMemory, reservoir_winners
from methods.agem import agem_project
from methods.gem import gem_project

PAIRS = [("text", "video"), ("text", "audio"), ("vision", "depth"), ("audio", "video")]
WIDTH = {"text": 3, "video": 4, "audio": 5, "vision": 6, "depth": 7}


def _step(task, n, start=0):
    """A step whose rows carry (task, global item index) in their first two columns; widths differ by modality."""
    a, b = PAIRS[task % len(PAIRS)]
    ids = torch.arange(start, start + n, dtype=torch.float32)
    xa, xb = torch.zeros(n, WIDTH[a]), torch.zeros(n, WIDTH[b])
    xa[:, 0], xa[:, 1] = task, ids
    xb[:, 0], xb[:, 1] = task, ids
    return (a, b), xa, xb


def _filled(policy, sizes, seed=0, capacity=40, per_step=8):
    buf, start = PairMemory(policy, capacity, per_step), 0
    for t, n in enumerate(sizes):
        pair, xa, xb = _step(t, n, start)
        buf.add_step(t, pair, xa, xb, torch.Generator().manual_seed(seed * 100 + t))
        start += n
    return buf


# --- the buffer ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["reservoir", "per_step"])
@pytest.mark.parametrize("groups", [0, 1, 2])
def test_replay_groups_never_mix_pairs(policy, groups):
    buf = _filled(policy, [30, 25, 40, 35])
    assert len(buf.tasks) >= 3
    gen = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(200):
        out = buf.sample(16, gen, groups=groups)
        assert 0 < sum(len(xa) for _, _, xa, _ in out) <= 16
        if groups:
            assert len(out) <= groups
        for t, pair, xa, xb in out:
            assert pair == PAIRS[t] and len(xa) == len(xb) >= 2          # one pair per group, InfoNCE-able
            assert xa.shape[1] == WIDTH[pair[0]] and xb.shape[1] == WIDTH[pair[1]]
            assert (xa[:, 0] == t).all() and (xb[:, 0] == t).all()       # every row from that task
            assert torch.equal(xa[:, 1], xb[:, 1])                       # rows still paired
            assert len(set(xa[:, 1].tolist())) == len(xa)                # drawn without replacement
            seen.add(t)
    assert seen == set(buf.tasks)
    # restricted to some tasks, and deterministic given the generator
    only = buf.sample(16, torch.Generator().manual_seed(2), tasks=[buf.tasks[0], buf.tasks[2]])
    assert {t for t, *_ in only} <= {buf.tasks[0], buf.tasks[2]}
    again = buf.sample(16, torch.Generator().manual_seed(2), tasks=[buf.tasks[0], buf.tasks[2]])
    assert all(torch.equal(x[2], y[2]) for x, y in zip(only, again))


def test_singleton_groups_are_dropped():
    buf = _filled("per_step", [30, 30, 30, 30], per_step=1)    # one pair per task: never a valid group
    assert buf.sample(4, torch.Generator().manual_seed(0)) == []


def _sequential_reservoir(n_seen, n_new, capacity, gen):
    """Algorithm R one item at a time, with the same draws as ``reservoir_winners``."""
    u = torch.rand(n_new, generator=gen, dtype=torch.float64).tolist()
    slots = [-1] * capacity
    for k in range(n_new):
        i = n_seen + k
        j = i if i < capacity else int(u[k] * (i + 1))
        if j < capacity:
            slots[j] = k
    return slots


def test_vectorised_reservoir_equals_sequential_algorithm_r():
    for n_seen, n_new in [(0, 5), (0, 30), (3, 40), (50, 200), (500, 100)]:
        w = reservoir_winners(n_seen, n_new, 20, torch.Generator().manual_seed(n_seen + n_new))
        ref = _sequential_reservoir(n_seen, n_new, 20, torch.Generator().manual_seed(n_seen + n_new))
        assert w.tolist() == ref       # slots the step does not touch are -1 in both


@pytest.mark.slow
def test_reservoir_is_a_uniform_sample_and_never_exceeds_capacity():
    sizes, capacity, runs = [7, 13, 20, 10], 10, 2000
    n_total = sum(sizes)
    kept = torch.zeros(n_total)
    for seed in range(runs):
        buf, start = PairMemory("reservoir", capacity), 0
        for t, n in enumerate(sizes):
            pair, xa, xb = _step(t, n, start)
            buf.add_step(t, pair, xa, xb, torch.Generator().manual_seed(seed * 10 + t))
            start += n
            assert len(buf) == min(capacity, start) <= capacity
            assert sum(buf.sizes().values()) == len(buf)
        for t, (xa, xb) in buf.rows.items():
            assert (xa[:, 0] == t).all() and torch.equal(xa[:, 1], xb[:, 1])
            kept[xa[:, 1].long()] += 1
    p = kept / runs
    # each of the N items is kept with probability capacity/N = 0.2 (binomial sd ≈ 0.009 per item)
    assert (p - capacity / n_total).abs().max() < 0.04
    assert kept.sum() == runs * capacity


def test_per_step_memory_keeps_a_random_subset_of_each_step():
    buf = _filled("per_step", [30, 5, 40], per_step=8)
    assert buf.sizes() == {0: 8, 1: 5, 2: 8}
    ids = buf.rows[0][0][:, 1]
    assert len(set(ids.tolist())) == 8 and ids.tolist() != list(range(8))


# --- the projections ----------------------------------------------------------------------------------------
def test_agem_projection_removes_only_the_conflict():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        g, ref = torch.randn(30, generator=gen, dtype=torch.float64), torch.randn(30, generator=gen, dtype=torch.float64)
        before = g.clone()
        out, projected = agem_project(g, ref)
        if torch.dot(before, ref) >= 0:
            assert not projected and torch.equal(out, before)                # already compatible: unchanged
        else:
            assert projected and torch.dot(out, ref) >= -1e-10               # no longer increases the old loss
            assert torch.dot(out, ref) == pytest.approx(0.0, abs=1e-10)      # the smallest change doing so
            assert torch.allclose(before - out, (before - out) @ ref / (ref @ ref) * ref)   # along ref only


def _conflicting_case():
    g = torch.tensor([1.0, 0.0, 0.0, 0.5, 0.0], dtype=torch.float64)
    refs = torch.tensor([[-1.0, 1.0, 0.0, 0.0, 0.0],
                         [-0.5, 0.0, 1.0, 0.0, 0.0],
                         [-1.0, -0.5, 0.2, 0.3, 0.0],
                         [0.0, 0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    return g, refs


def test_gem_projection_satisfies_every_constraint_and_is_the_closest_point():
    import quadprog
    g, refs = _conflicting_case()
    assert ((refs @ g) < 0).sum() >= 3                     # several constraints violated at once
    out = gem_project(g, refs, margin=0.0, eps=0.0)
    assert ((refs @ out) >= -1e-6).all()
    # the direct primal problem: min ½‖z − g‖² s.t. refs z ≥ 0
    z = torch.from_numpy(quadprog.solve_qp(np.eye(5), g.numpy(), refs.T.numpy().copy(), np.zeros(4))[0])
    assert torch.allclose(out, z, atol=1e-6)
    # and no feasible point nearby is closer to g
    gen = torch.Generator().manual_seed(0)
    cand = out + 0.3 * torch.randn(5000, 5, generator=gen, dtype=torch.float64)
    feasible = ((cand @ refs.T) >= 0).all(1)
    assert feasible.sum() > 100
    assert ((cand[feasible] - g).norm(dim=1) >= (out - g).norm() - 1e-9).all()
    # with the memory strength γ > 0 the constraints still hold, with room to spare
    strong = gem_project(g, refs, margin=0.5, eps=1e-6)
    assert ((refs @ strong) >= -1e-6).all() and (refs @ strong).sum() > (refs @ out).sum()


def test_gem_projection_leaves_a_compatible_gradient_alone():
    _, refs = _conflicting_case()
    g = torch.tensor([0.0, 1.0, 1.0, 2.0, 1.0], dtype=torch.float64)
    assert ((refs @ g) > 0).all()
    assert torch.allclose(gem_project(g, refs, margin=0.0, eps=0.0), g, atol=1e-9)


# --- on real runs -------------------------------------------------------------------------------------------
def _two_step_run(spec, method, **params):
    # plain SGD (each method's update is then exactly what it computes), a moderate step
    train = TrainConfig(epochs=3, lr=0.1, weight_decay=0.0, optimizer="sgd")
    return run_method(spec, method, params, seed=0, train=train, loss=LossConfig(temperature=0.1))


@pytest.fixture(scope="module")
def two_step_runs(tmp_path_factory):
    from conftest import TWO_STEP
    path = tmp_path_factory.mktemp("two") / "two-step.toml"
    path.write_text(TWO_STEP)
    spec = streams.load(str(path))
    return {m: _two_step_run(spec, m) for m in ("vanilla", "er", "agem", "gem")}


@pytest.mark.parametrize("method", ["er", "agem", "gem"])
def test_replay_methods_move_old_alignment_scores_less_than_vanilla(two_step_runs, method):
    """Step 2 (text–audio) shares the text head with step 1 (text–video): replaying or constraining on the
    stored step-1 pairs keeps step-1 alignment scores closer to where step 1 left them, while step 2 is
    still learned."""
    van, r = two_step_runs["vanilla"], two_step_runs[method]
    assert r["matrices"]["align_dev"][2][0] < 0.9 * van["matrices"]["align_dev"][2][0]
    assert r["matrices"]["r10"][2][0] > van["matrices"]["r10"][2][0]           # and step 1 is recalled better
    assert r["matrices"]["r10"][2][1] > r["matrices"]["r10"][0][1]             # step 2 is still learned
    st = r["method_state"]
    assert st["buffer_per_task"] == {"0": 200, "1": 200}                       # 200 training pairs per step
    if method == "er":
        assert st["replayed_iterations"] > 0
    if method == "agem":
        assert 0 < st["projected_iterations"] <= st["iterations_with_reference"]
    if method == "gem":
        assert st["qp_solves"] > 0 and st["per_step"][1]["constraints"] == 1


def test_agem_with_the_whole_memory_is_gem_with_one_constraint(two_step_runs):
    """One past pair: GEM's QP has one constraint, whose solution is A-GEM's projection; A-GEM's reference
    batch (1024) covers the whole 200-pair memory, so the two runs coincide (up to GEM's QP ridge)."""
    a, g = two_step_runs["agem"]["matrices"], two_step_runs["gem"]["matrices"]
    assert a["align_dev"][2][0] == pytest.approx(g["align_dev"][2][0], abs=1e-4)
    assert a["r10"][2] == g["r10"][2]


def test_heads_all_makes_buffered_pairs_heads_trainable():
    from methods.er import ER
    heads = Heads({m: 4 for m in ("text", "video", "audio", "depth", "vision")}, 4)
    tasks = [type("T", (), {"pair": p})() for p in PAIRS[:3]]
    ctx = Context(heads=heads, loss_cfg=LossConfig(), device=torch.device("cpu"), seed=0, tasks=tasks)
    for heads_opt, expect in (("all", ["text", "audio", "video", "vision", "depth"]), ("pair", ["text", "audio"])):
        er = ER(heads=heads_opt, seed=0)
        for t in (0, 2):
            ctx.step, ctx.task = t, tasks[t]
            ctx.train = (torch.randn(10, 4), torch.randn(10, 4))
            er.after_training_exp(ctx)
        ctx.step, ctx.task = 1, tasks[1]
        assert er.trainable_modalities(ctx, [1]) == expect
        er.before_training_exp(ctx)
        assert er._eligible == ([0, 2] if heads_opt == "all" else [0])    # pairs whose loss the step can change


@pytest.mark.parametrize("method", ["er", "agem", "gem"])
def test_cli_runs_each_replay_method_on_toy(tmp_path, method):
    assert run.main(["--methods", method, "--stream", "toy", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path),
                     "--no-figures"]) == 0
    assert (tmp_path / "toy" / "runs" / method / "seed0.json").exists()


@pytest.mark.parametrize("method", ["er", "der", "derpp", "co2l"])
def test_heads_pair_spends_no_gradient_on_a_partner_head_it_does_not_train(two_step, method):
    """Step 2 (text, audio) replays step 1's text–video pairs; with heads = pair the video head is frozen, so
    it must stay out of the graph (no .grad accumulating on it, no backward cost)."""
    import methods
    from bench import streams
    from bench.heads import Heads
    from bench.loss import LossConfig
    from bench.runner import get_scenario
    from bench.trainer import TrainConfig, Trainer
    scenario = get_scenario(streams.load(str(two_step)))
    heads = Heads(scenario.in_dims, 24)
    m = methods.get(method)(heads="pair", replay_batch=16)
    tr = Trainer(scenario, m, heads, TrainConfig(epochs=1, lr=1e-2), LossConfig(), seed=0)
    tr.train_experience(0)
    heads.zero_grad(set_to_none=True)
    video = heads["video"].weight.detach().clone()
    tr.train_experience(1)
    assert m.state_summary().get("replayed_iterations", 1) > 0
    assert heads["video"].weight.grad is None and torch.equal(heads["video"].weight.detach(), video)


THREE_STEP_SHARED = """
[[steps]]
source = "a"
pair = ["video", "text"]
metrics = ["recall"]
"""


def _gem_trainer(two_step, method, **options):
    """Steps 1–2 of two_step plus a third (a: video–text) that shares text with both: two memories."""
    import methods
    from bench.runner import get_scenario
    from bench.trainer import Trainer
    path = two_step.parent / "three-shared.toml"
    path.write_text(two_step.read_text() + THREE_STEP_SHARED)
    scenario = get_scenario(streams.load(str(path)))
    heads = Heads(scenario.in_dims, 24)
    m = methods.get(method)(**options)
    tr = Trainer(scenario, m, heads, TrainConfig(epochs=2, lr=0.05, weight_decay=0.0, optimizer="sgd"),
                 LossConfig(temperature=0.1), seed=0)
    return tr, m


def test_gem_has_one_constraint_per_memory_each_from_its_own_pairs(two_step):
    """Each row is its memory's InfoNCE gradient (written out in GEM) as autograd gives it through the loss's
    definition."""
    from bench.loss import reference_info_nce
    tr, m = _gem_trainer(two_step, "gem")
    for s in range(3):
        tr.train_experience(s)
    assert m._eligible == [0, 1]
    refs = m._reference_gradients(tr.ctx)
    params = m._params
    for k, t in enumerate(m._eligible):
        (a, b), (xa, xb) = m.replay_buffer.pairs[t], m.replay_buffer.task_rows(t)
        za, zb = tr.heads[a](xa), tr.heads[b](xb)
        grads = torch.autograd.grad(reference_info_nce(za, zb, LossConfig(temperature=0.1)), params,
                                    allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])
        assert torch.allclose(refs[k], flat, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(refs[0], refs[1])


@pytest.mark.parametrize("heads", ["pair", "all"])
def test_agem_reference_gradient_is_the_replayed_losses_gradient(two_step, heads):
    """A-GEM's written-out reference gradient equals autograd's gradient of the replay batch's group loss
    (InfoNCE per pair group, weighted by the groups' sizes) over the heads in play."""
    from bench.loss import reference_info_nce
    tr, m = _gem_trainer(two_step, "agem", heads=heads, replay_batch=12)
    for s in range(2):
        tr.train_experience(s)
    tr.begin_experience(2)
    groups = m.replay_buffer.sample(12, m._gen, 0, m._eligible)
    assert len(groups) == 2 and len({g[1] for g in groups}) == 2
    ours = m._replay_gradient(tr.heads, groups, LossConfig(temperature=0.1), torch.zeros_like(m._g))
    n = sum(len(g[2]) for g in groups)
    loss = sum(len(xa) * reference_info_nce(tr.heads[a](xa), tr.heads[b](xb), LossConfig(temperature=0.1))
               for _, (a, b), xa, xb in groups) / n
    grads = torch.autograd.grad(loss, m._params, allow_unused=True)
    flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, m._params)])
    torch.testing.assert_close(ours, flat, rtol=1e-4, atol=1e-7)
    assert float(ours.abs().sum()) > 0


@pytest.mark.parametrize("method", ["gem", "agem"])
def test_projected_gradient_reaches_the_optimiser(two_step, method):
    """With project = gradient, the gradient the optimiser steps on satisfies the constraints: ⟨g, ref⟩ ≥ 0 for
    every memory's reference gradient (up to GEM's ridge), on iterations where the raw gradient violated one."""
    import methods

    class Checked(methods.get(method)):
        def before_update(self, ctx):
            super().before_update(ctx)
            refs = self._refs if method == "gem" else (self._ref.unsqueeze(0) if self._have_ref else None)
            if refs is not None:
                g = self._grads_to_flat(torch.empty_like(self._g))
                self.dots.append(float((refs @ g).min() / (refs.norm(dim=1).max() * g.norm() + 1e-30)))

    from bench.runner import get_scenario
    from bench.trainer import Trainer
    scenario = get_scenario(streams.load(str(two_step)))
    heads = Heads(scenario.in_dims, 24)
    m = Checked(project="gradient")
    m.dots = []
    tr = Trainer(scenario, m, heads, TrainConfig(epochs=2, lr=0.05, weight_decay=0.0, optimizer="sgd"),
                 LossConfig(temperature=0.1), seed=0)
    tr.train_experience(0)
    tr.train_experience(1)
    state = m.state_summary()
    assert (state["qp_solves"] if method == "gem" else state["projected_iterations"]) > 0
    assert len(m.dots) > 0 and min(m.dots) > -1e-4

"""GPM and Adam-NSCL (single-sided, input-side null-space projection): the update rule, GPM's incremental
basis, and the paper's argument measured — at equal stability DNS's dual-sided projector leaves more room."""
from types import SimpleNamespace

import pytest
import torch
from conftest import run_method

import methods
from bench import registry, run, streams
from bench.heads import Heads
from bench.loss import LossConfig, info_nce
from bench.trainer import TrainConfig
from methods.gpm import GPM, gpm_expand
from methods.nscl import NSCL, null_mask

D = 8


def _Ctx(heads, pair, step, train):
    return SimpleNamespace(heads=heads, pair=pair, step=step, train=train, task=None, grad_scale=None)


def _low_rank(n, rank, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g)


def _folded(lin):
    return torch.cat([lin.weight.detach(), lin.bias.detach()[:, None]], 1).clone()


def _aug(x):
    return torch.cat([x, torch.ones(len(x), 1)], 1)


def _train(method, heads, ctx, opt, new, iters=5):
    """The trainer's hook sequence around real optimiser steps on a new pair's data."""
    ctx.xa, ctx.xb = new
    for _ in range(iters):
        ctx.za, ctx.zb = heads["text"](ctx.xa), heads["video"](ctx.xb)
        ctx.loss = info_nce(ctx.za, ctx.zb, LossConfig(temperature=0.1))
        method.before_backward(ctx)
        opt.zero_grad(set_to_none=True)
        ctx.loss.backward()
        method.after_backward(ctx)
        method.before_update(ctx)
        opt.step()
        method.after_update(ctx)


def _setup(method, old_rank):
    """Step 0 absorbed (old text inputs of rank ``old_rank``), step 1 starting on new, full-rank data."""
    torch.manual_seed(0)
    heads = Heads({"text": D, "video": D}, D)
    old = (_low_rank(60, old_rank, seed=1), torch.randn(60, D))
    method.after_training_exp(_Ctx(heads, ("text", "video"), 0, old))
    ctx = _Ctx(heads, ("text", "video"), 1, (torch.randn(80, D), torch.randn(80, D)))
    method.before_training_exp(ctx)
    return heads, ctx, old[0]


@pytest.mark.parametrize("old_rank", [3, 6])      # projector kept as its basis (4 of 9) / its complement (7 of 9)
@pytest.mark.parametrize("project", ["gradient", "update"])
def test_gpm_update_is_orthogonal_to_the_stored_input_basis(project, old_rank):
    gpm = GPM(energy=1.0, project=project)
    heads, ctx, x_old = _setup(gpm, old_rank)
    u = gpm.basis["text"].float()
    assert u.shape[1] == old_rank + 1                          # [x; 1]: the data's span plus the bias direction
    lin = heads["text"]
    w0, out0 = _folded(lin), lin(x_old).detach()
    opt = torch.optim.SGD(heads.parameters_of(ctx.pair), lr=0.5)
    _train(gpm, heads, ctx, opt, ctx.train)
    delta = _folded(lin) - w0
    assert delta.norm() > 0.05                                 # the head moved …
    assert (delta @ u).abs().max() < 1e-5                      # … only off the stored input basis: ΔW U = 0
    assert torch.allclose(lin(x_old), out0, atol=1e-5)         # so old inputs' embeddings are unchanged
    # the video head's past inputs (full rank) span all of [x; 1]: no room left, it does not move
    assert (heads["video"].weight.detach() - torch.eye(D)).abs().max() < 1e-6


@pytest.mark.parametrize("bias", ["fold", "freeze", "free"])
@pytest.mark.parametrize("old_rank", [3, 6])
def test_gpm_gradient_on_batch_factors_equals_the_projected_gradient(old_rank, bias):
    """For wide heads the gradient is projected as Δᵀ (X (I − P)) instead of (Δᵀ X)(I − P): same result."""
    grads = {}
    for factors in (False, True):
        gpm = GPM(energy=1.0, bias=bias)
        gpm._costs = lambda *a, use=factors: (float("inf"), 0) if use else (0, float("inf"))     # force the path
        heads, ctx, _ = _setup(gpm, old_rank)
        ctx.xa, ctx.xb = ctx.train[0][:16], ctx.train[1][:16]
        ctx.za, ctx.zb = heads["text"](ctx.xa), heads["video"](ctx.xb)
        ctx.loss = info_nce(ctx.za, ctx.zb, LossConfig())
        gpm.before_backward(ctx)
        ctx.loss.backward()
        raw = (heads["text"].weight.grad.clone(), heads["text"].bias.grad.clone())
        gpm.after_backward(ctx)
        lin = heads["text"]
        grads[factors] = (lin.weight.grad.clone(), None if lin.bias.grad is None else lin.bias.grad.clone())
    assert torch.allclose(grads[True][0], grads[False][0], atol=1e-5)
    assert not torch.allclose(grads[True][0], raw[0], atol=1e-3)            # the projection did act
    if bias == "freeze":
        assert grads[True][1] is None and grads[False][1] is None
    else:
        assert torch.allclose(grads[True][1], grads[False][1], atol=1e-5)
        if bias == "free":
            assert torch.equal(grads[True][1], raw[1])


@pytest.mark.parametrize("scale", [None, 0.3])
@pytest.mark.parametrize("bias", ["fold", "freeze", "free"])
@pytest.mark.parametrize("name", ["dns", "gpm"])
def test_gradient_projection_on_batch_factors_equals_the_dense_one(name, bias, scale):
    """DNS's removed part P̃ G P is (D P̃)ᵀ (X P) and GPM's G P is Dᵀ (X P): subtracted from the gradient
    autograd computed, the result equals projecting the dense gradient — also when clipping has scaled the
    gradient (``grad_scale``), where the factors must be scaled alike."""
    from methods.dns import DNS
    grads = {}
    for factors in (False, True):
        m = DNS(lambda_min=1e-3, bias=bias, project="gradient") if name == "dns" else GPM(energy=1.0, bias=bias)
        m._costs = lambda *a, use=factors: (float("inf"), 0) if use else (0, float("inf"))      # force the path
        heads, ctx, _ = _setup(m, 3)
        ctx.xa, ctx.xb = ctx.train[0][:16], ctx.train[1][:16]
        ctx.za, ctx.zb = heads["text"](ctx.xa), heads["video"](ctx.xb)
        ctx.loss = info_nce(ctx.za, ctx.zb, LossConfig())
        m.before_backward(ctx)
        ctx.loss.backward()
        if scale is not None:               # what --clip-grad-norm does before the hook
            ctx.grad_scale = torch.tensor(scale)
            for p in heads.parameters():
                p.grad.mul_(scale)
        raw = heads["text"].weight.grad.clone()
        m.after_backward(ctx)
        assert m._factor.get("text", False) == factors
        grads[factors] = [None if p.grad is None else p.grad.clone() for p in heads.parameters()]
    assert not torch.allclose(grads[True][0], raw, atol=1e-4)       # the projection acted on the text head
    for a, b in zip(grads[True], grads[False]):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-5), (a, b)


@pytest.mark.parametrize("old_rank", [3, 6])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_nscl_update_lies_in_the_null_space_of_past_inputs(optimizer, old_rank):
    nscl = NSCL(threshold="abs", value=1e-6)
    heads, ctx, x_old = _setup(nscl, old_rank)
    evals, evecs = torch.linalg.eigh(nscl.cov["text"])
    principal = evecs[:, evals > 1e-6].float()
    assert principal.shape[1] == old_rank + 1
    assert nscl.proj["text"].rank == old_rank + 1
    lin = heads["text"]
    w0, out0 = _folded(lin), lin(x_old).detach()
    params = heads.parameters_of(ctx.pair)
    opt = (torch.optim.SGD(params, lr=0.5) if optimizer == "sgd"
           else torch.optim.AdamW(params, lr=0.05, weight_decay=0.1))    # update projection: exact under AdamW too
    _train(nscl, heads, ctx, opt, ctx.train)
    delta = _folded(lin) - w0
    assert delta.norm() > 0.05
    assert (delta @ principal).abs().max() < 1e-5              # the change times the principal basis ≈ 0
    null = evecs[:, evals <= 1e-6].float()
    assert torch.allclose(delta, delta @ null @ null.T, atol=1e-5)    # i.e. ΔW = ΔW U₂U₂ᵀ
    assert torch.allclose(_aug(x_old) @ delta.T, torch.zeros(len(x_old), D), atol=1e-4)
    assert torch.allclose(lin(x_old), out0, atol=1e-4)


def test_nscl_normalized_projector_scales_one_update_by_the_projectors_norm():
    """The authors' code applies U₂U₂ᵀ / ‖U₂U₂ᵀ‖_F to Adam's update: one SGD step from the same state moves
    the head by exactly the plain projected step divided by √(dim of the null space)."""
    steps = {}
    for normalize in (False, True):
        nscl = NSCL(threshold="abs", value=1e-6, normalize_projector=normalize)
        heads, ctx, _ = _setup(nscl, 3)
        w0 = _folded(heads["text"])
        _train(nscl, heads, ctx, torch.optim.SGD(heads.parameters_of(ctx.pair), lr=0.5), ctx.train, iters=1)
        steps[normalize] = _folded(heads["text"]) - w0
    null_dim = D + 1 - (3 + 1)
    assert steps[False].norm() > 1e-3
    assert torch.allclose(steps[True], steps[False] / null_dim ** 0.5, atol=1e-6)


def test_nscl_null_space_rules():
    ev = torch.tensor([1.0, 0.1, 1e-3, 2e-4, 1e-4, 0.0])
    # min_ratio: λ ≤ a·λ_min; here λ_min = 0, so only the numerical zero (the exact null space)
    assert null_mask(ev, "min_ratio", 10).tolist() == [False] * 5 + [True]
    ev = ev.clone()
    ev[-1] = 5e-5
    assert null_mask(ev, "min_ratio", 10).tolist() == [False, False, False, True, True, True]
    assert null_mask(ev, "rel", 0.05).tolist() == [False, False, True, True, True, True]
    assert null_mask(ev, "abs", 1e-4).tolist() == [False, False, False, False, True, True]


def _energy(u, x):
    x = x.double()
    return float(((x @ u) @ u.T).pow(2).sum() / x.pow(2).sum())


def test_gpm_basis_grows_incrementally_by_uncaptured_directions_only():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    scales = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.2], dtype=torch.float64)
    x1 = (torch.randn(200, 5, generator=g, dtype=torch.float64) * scales) @ q[:, :5].T      # old subspace
    # step 2: half in the old subspace, half in three new directions
    x2 = torch.cat([x1[:100] * 0.5, (torch.randn(100, 3, generator=g, dtype=torch.float64)
                                     * torch.tensor([2.0, 1.0, 0.3], dtype=torch.float64)) @ q[:, 5:8].T])
    eps = 0.95
    u1, info1 = gpm_expand(None, x1, eps)
    k1 = u1.shape[1]
    assert torch.allclose(u1.T @ u1, torch.eye(k1, dtype=torch.float64), atol=1e-10)
    assert _energy(u1, x1) >= eps > _energy(u1[:, :k1 - 1], x1)          # reaches ε with the fewest directions
    assert info1["added"] == k1 and 0 < k1 < 5

    u2, info2 = gpm_expand(u1, x2, eps)
    k2 = u2.shape[1]
    assert torch.equal(u2[:, :k1], u1)                                   # the old basis is kept as it is
    assert torch.allclose(u2.T @ u2, torch.eye(k2, dtype=torch.float64), atol=1e-10)   # still orthonormal
    assert info2["captured_before"] == pytest.approx(_energy(u1, x2)) and info2["captured_before"] < eps
    assert _energy(u2, x2) >= eps and _energy(u2, x1) >= eps             # the threshold holds on each step's data
    assert _energy(u2[:, :k2 - 1], x2) < eps                             # and only the needed directions were added
    new = u2[:, k1:]
    assert (new.T @ u1).abs().max() < 1e-10
    # the new directions are the residual's: (almost) all inside the new 3-dim block or the uncaptured old tail
    assert (new.T @ q[:, 8:]).abs().max() < 1e-8

    # nothing is added for data the basis already captures (same subspace, new samples)
    x3 = torch.randn(50, 12, generator=g, dtype=torch.float64) @ u2 @ u2.T
    u3, info3 = gpm_expand(u2, x3, eps)
    assert info3["added"] == 0 and torch.equal(u3, u2)


def test_gpm_method_records_the_threshold_reached_per_step():
    gpm = GPM()                                                          # default energy 0.97, bias folded
    heads = Heads({"text": D, "video": D}, D)
    for step, seed in enumerate((1, 2)):
        ctx = _Ctx(heads, ("text", "video"), step, (_low_rank(100, 3, seed=seed) + 0.01 * torch.randn(100, D),
                                                    torch.randn(100, D)))
        gpm.after_training_exp(ctx)
        u = gpm.basis["text"]
        assert torch.allclose(u.T @ u, torch.eye(u.shape[1], dtype=torch.float64), atol=1e-10)
        assert _energy(u, _aug(ctx.train[0])) >= 0.97
    recs = [r for r in gpm.state_summary()["memory_updates"] if r["modality"] == "text"]
    assert recs[1]["basis_rank"] == recs[0]["basis_rank"] + recs[1]["added"] and recs[1]["added"] > 0
    assert all(r["captured_after"] >= 0.97 for r in recs)


# --- the paper's argument, measured -----------------------------------------------------------------------

def _probe(base):
    """A run-time copy of a registered method that records, per step, the pair's heads' total change
    (‖Δ[W | b]‖_F) and the step's training loss on all its training pairs before and after the step."""

    class Probe(base):
        def before_training_exp(self, ctx):
            super().before_training_exp(ctx)
            self._w0 = {m: _folded(ctx.heads[m]) for m in ctx.pair}
            self._loss0 = self._train_loss(ctx)

        def after_training_exp(self, ctx):
            super().after_training_exp(ctx)
            self.__dict__.setdefault("probe", []).append({
                "loss_drop": self._loss0 - self._train_loss(ctx),
                "change": {m: float((_folded(ctx.heads[m]) - self._w0[m]).norm()) for m in ctx.pair}})

        @staticmethod
        @torch.no_grad()
        def _train_loss(ctx):
            a, b = ctx.pair
            return float(info_nce(ctx.heads[a](ctx.train[0]), ctx.heads[b](ctx.train[1]), ctx.loss_cfg))

        def state_summary(self):
            return {**super().state_summary(), "probe": self.probe}

    Probe.name = f"probe-{base.name}"
    return Probe


TINY = {"dns": {"lambda_min": 1e-6}, "gpm": {"energy": 1.0}, "nscl": {"threshold": "abs", "value": 1e-6},
        "vanilla": {}}


def _probed_runs(spec, train, monkeypatch):
    out = {}
    for name, params in TINY.items():
        cls = _probe(methods.get(name))
        monkeypatch.setitem(registry._REGISTRY, cls.name, cls)
        out[name] = run_method(spec, cls.name, params, 0, train, LossConfig(temperature=0.1))
    return out


CROSS = """
name = "cross"
description = "step 3 pairs text (learned with video in step 1) with audio (learned with depth in step 2)"
[simulation]
seed = 3
dim = 24
common_dim = 8        # most of each source in the shared block: old input spans cover most of step 3's inputs
specific_dim = 2
floor_noise = 0.0
domain_shift = 0.7
[modalities.text]
misalignment = 0.3
noise = 0.8
[modalities.video]
misalignment = 0.4
noise = 0.8
[modalities.audio]
misalignment = 0.4
noise = 0.8
[modalities.depth]
misalignment = 0.4
noise = 0.8
[sources.a]
modalities = ["text", "video"]
classes = 6
train = 200
test = 64
[sources.b]
modalities = ["text", "audio"]
classes = 6
train = 200
test = 64
[sources.c]
modalities = ["audio", "depth"]
classes = 6
train = 200
test = 64
[[steps]]
source = "a"
pair = ["text", "video"]
metrics = ["recall"]
[[steps]]
source = "c"
pair = ["audio", "depth"]
metrics = ["recall"]
[[steps]]
source = "b"
pair = ["text", "audio"]
metrics = ["recall"]
"""


def test_at_equal_stability_dns_learns_more_than_one_sided_projection(tmp_path, monkeypatch):
    """Step 3 pairs text (learned with video in step 1) with audio (learned with depth in step 2): both heads
    are constrained, and neither old partner moves, so DNS keeps both old tasks' scores exactly. With plain
    SGD, no weight decay and tiny thresholds, all three methods keep them (equal stability), but GPM and
    Adam-NSCL freeze the heads on every old input direction while DNS only removes the part aligned with the
    old partners' embeddings: DNS decreases step 3's training loss clearly more (plasticity)."""
    path = tmp_path / "cross.toml"
    path.write_text(CROSS)
    spec = streams.load(str(path))
    runs = _probed_runs(spec, TrainConfig(epochs=3, lr=0.1, weight_decay=0.0, optimizer="sgd"), monkeypatch)
    for name in ("dns", "gpm", "nscl"):                                   # equal stability …
        assert max(runs[name]["matrices"]["align_dev"][3][:2]) < 1e-3, name
    assert min(runs["vanilla"]["matrices"]["align_dev"][3][:2]) > 1e-2   # … which is not free on this stream
    drop = {n: r["method_state"]["probe"][2]["loss_drop"] for n, r in runs.items()}
    assert drop["gpm"] > 0.3 and drop["nscl"] > 0.3                      # the one-sided methods still learn …
    assert drop["dns"] > 1.2 * drop["gpm"] and drop["dns"] > 1.2 * drop["nscl"]   # … DNS clearly more
    # at tiny thresholds GPM's basis and NSCL's principal subspace are the same span: same training
    assert drop["gpm"] == pytest.approx(drop["nscl"], abs=1e-3)
    for m in ("text", "audio"):
        moved = {n: runs[n]["method_state"]["probe"][2]["change"][m] for n in ("dns", "gpm")}
        assert moved["dns"] > 1.05 * moved["gpm"], m


def test_on_two_step_dns_moves_the_shared_head_further(two_step, monkeypatch):
    """The two_step fixture: step 2 shares text with step 1, the video head is untouched. At equal stability
    the text head travels clearly further under DNS than under GPM / Adam-NSCL. (Its training loss does not
    tell them apart here: the audio head is new, hence free under every method, and compensates.)"""
    spec = streams.load(str(two_step))
    runs = _probed_runs(spec, TrainConfig(epochs=3, lr=0.5, weight_decay=0.0, optimizer="sgd"), monkeypatch)
    for name in ("dns", "gpm", "nscl"):
        assert runs[name]["matrices"]["align_dev"][2][0] < 1e-3, name
    assert runs["vanilla"]["matrices"]["align_dev"][2][0] > 1e-2
    text = {n: r["method_state"]["probe"][1]["change"]["text"] for n, r in runs.items()}
    assert text["dns"] > 1.25 * text["gpm"] and text["dns"] > 1.25 * text["nscl"]
    ranks = [r for r in runs["gpm"]["method_state"]["projector_ranks"]
             if r["step"] == 1 and r["modality"] == "text"][0]
    assert 0 < ranks["input_rank"] < ranks["input_dim"]


@pytest.mark.parametrize("method", ["gpm", "nscl"])
def test_cli_runs(method, tmp_path):
    assert run.main(["--methods", method, "--stream", "toy", "--seeds", "1", "--epochs", "1", "--out",
                     str(tmp_path), "--no-figures", "--threads", "1"]) == 0
    assert (tmp_path / "toy" / "runs" / method / "seed0.json").exists()


@pytest.mark.parametrize("name", ["dns", "dns-official", "gpm", "nscl"])
def test_bias_freeze_holds_only_heads_with_something_to_protect(two_step, name):
    """Step 2 (text, audio): text was trained at step 1, so its bias stays; audio is new and learns its bias."""
    import methods
    from bench.heads import Heads
    from bench.loss import LossConfig
    from bench.runner import get_scenario
    from bench.trainer import TrainConfig, Trainer
    scenario = get_scenario(streams.load(str(two_step)))
    heads = Heads(scenario.in_dims, 24)
    tr = Trainer(scenario, methods.get(name)(bias="freeze"), heads, TrainConfig(epochs=1, lr=1e-2), LossConfig(),
                 seed=0)
    tr.train_experience(0)
    before = {m: heads[m].bias.detach().clone() for m in ("text", "audio")}
    assert before["audio"].abs().max() == 0                 # untouched so far
    tr.train_experience(1)
    assert torch.equal(heads["text"].bias.detach(), before["text"])
    assert heads["audio"].bias.detach().abs().max() > 1e-3

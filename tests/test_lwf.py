"""LwF: the distillation terms vanish at the snapshot and grow away from it, term 2 acts only on modalities an
earlier step trained, and the method keeps step-1 alignment scores better than Vanilla on a real run."""
import pytest
import torch
from conftest import perturb, run_method, scalar

from bench import streams
from bench.heads import Heads
from bench.loss import LossConfig
from bench.run import main
from bench.trainer import TrainConfig
from methods.lwf import LwF

D = 8


class _Task:
    def __init__(self, pair):
        self.pair = pair


class _Ctx:
    """The part of ``methods.base.Context`` LwF reads: pair, heads, loss config and one batch."""

    def __init__(self, heads, pair, step, loss_cfg=None):
        self.heads, self.task, self.step = heads, _Task(pair), step
        self.loss_cfg = loss_cfg or LossConfig()
        g = torch.Generator().manual_seed(step)
        self.xa, self.xb = torch.randn(16, D, generator=g), torch.randn(16, D, generator=g)

    @property
    def pair(self):
        return self.task.pair

    def forward(self):
        a, b = self.pair
        self.za, self.zb = self.heads[a](self.xa), self.heads[b](self.xb)
        return self


def _heads():
    heads = Heads({m: D for m in ("text", "video", "audio")}, D)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():                      # away from the identity, as after some training
        for lin in heads.linears.values():
            lin.weight.add_(0.3 * torch.randn(D, D, generator=g))
    return heads


def _after_step1(heads, **params):
    """LwF that has finished step 1 (text, video) and started step 2 (text, audio)."""
    lwf = LwF(**params)
    first = _Ctx(heads, ("text", "video"), 0)
    lwf.before_training_exp(first)
    assert lwf.old == {}                                   # no previous model on the first step
    assert lwf.distillation(first.forward()) == (0.0, 0.0)
    lwf.after_training_exp(first)
    ctx = _Ctx(heads, ("text", "audio"), 1)
    lwf.before_training_exp(ctx)
    return lwf, ctx


@pytest.mark.parametrize("normalize", [False, True])
def test_terms_are_zero_at_the_snapshot_and_positive_after_a_head_moves(normalize):
    heads = _heads()
    lwf, ctx = _after_step1(heads)
    ctx.loss_cfg = LossConfig(normalize=normalize)
    t1, t2 = lwf.distillation(ctx.forward())
    assert abs(scalar(t1)) < 1e-6 and abs(scalar(t2)) < 1e-6
    perturb(heads["text"], scale=0.2)
    t1, t2 = lwf.distillation(ctx.forward())
    assert scalar(t1) > 1e-3 and scalar(t2) > 1e-3
    # the snapshot is a frozen copy: moving the head did not move it, and it receives no gradient
    w_old, b_old = lwf.old["text"]
    assert not w_old.requires_grad and not torch.equal(w_old, heads["text"].weight)
    (t1 + t2).backward()
    assert heads["text"].weight.grad is not None and heads["text"].weight.grad.abs().sum() > 0


def test_term2_only_for_modalities_an_earlier_step_trained():
    heads = _heads()
    lwf, ctx = _after_step1(heads)
    assert lwf.shared == ("text",)                        # audio is new at step 2; video is not in the pair
    assert set(lwf.old) == {"text", "audio"}              # only the pair's heads are copied
    perturb(heads["audio"], scale=0.2)                              # a never-trained modality moves: only term 1 sees it
    t1, t2 = lwf.distillation(ctx.forward())
    assert scalar(t1) > 1e-3 and scalar(t2) == 0.0
    perturb(heads["text"], scale=0.2)
    t1, t2 = lwf.distillation(ctx.forward())
    assert scalar(t2) > 1e-3
    # the switches: without term 1 only the shared head is copied; without term 2 it is off
    only2, ctx2 = _after_step1(_heads(), cross_modal=False)
    assert set(only2.old) == {"text"}
    only1, ctx1 = _after_step1(heads, shared_modalities=False)
    perturb(heads["text"], scale=0.2, seed=8)
    t1, t2 = only1.distillation(ctx1.forward())
    assert only1.shared == () and scalar(t1) > 1e-3 and scalar(t2) == 0.0


def test_no_distillation_on_a_step_whose_heads_are_both_new():
    heads = _heads()
    lwf, ctx = _after_step1(heads)
    lwf.after_training_exp(ctx)                           # text, video, audio trained
    heads.linears["depth"] = torch.nn.Linear(D, D)
    heads.linears["vision"] = torch.nn.Linear(D, D)
    new = _Ctx(heads, ("vision", "depth"), 2)
    lwf.before_training_exp(new)
    assert lwf.old == {} and lwf.distillation(new.forward()) == (0.0, 0.0)


def test_loss_gets_alpha_times_the_terms():
    heads = _heads()
    lwf, ctx = _after_step1(heads, alpha=2.5)
    perturb(heads["text"], scale=0.2)
    ctx.forward()
    t1, t2 = lwf.distillation(ctx)
    ctx.loss = torch.tensor(1.0)
    lwf.before_backward(ctx)
    assert scalar(ctx.loss) == pytest.approx(1.0 + 2.5 * scalar(t1 + t2), rel=1e-6)
    lwf.after_training_exp(ctx)
    log = lwf.state_summary()["distillation"]
    assert log[-1]["step"] == 1 and log[-1]["shared"] == ["text"] and log[-1]["term2"] > 0


def _align_dev(spec, method, params):
    r = run_method(spec, method, params, 0, TrainConfig(epochs=3, lr=1e-2), LossConfig())
    return r["matrices"]["align_dev"][2][0]


def test_lwf_moves_old_alignment_scores_less_than_vanilla(two_step):
    spec = streams.load(str(two_step))
    van = _align_dev(spec, "vanilla", {})
    assert _align_dev(spec, "lwf", {"alpha": 10.0}) < 0.5 * van
    # term 2 alone (the shared text head's geometry) already protects step 1
    assert _align_dev(spec, "lwf", {"alpha": 30.0, "cross_modal": False}) < 0.8 * van


def test_lwf_runs_from_the_cli(tmp_path):
    assert main(["--methods", "lwf", "--stream", "toy", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path),
                 "--no-figures"]) == 0
    assert (tmp_path / "toy" / "runs" / "lwf" / "seed0.json").exists()

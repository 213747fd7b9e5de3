"""The Hugging Face Trainer defaults as options: linear LR decay per step, gradient-norm clipping before any
gradient hook, no weight decay on biases; and the ``--protocol official`` preset that turns them on."""
import json

import pytest
import torch

from bench import streams
from bench.config import LossConfig, TrainConfig
from bench.errors import BenchError
from bench.heads import Heads
from bench.method import Method
from bench.run import main
from bench.runner import get_scenario
from bench.trainer import Trainer, make_optimizer


class Recorder(Method):
    """Records the learning rate and the gradient norm each iteration sees at ``after_backward``."""

    def __init__(self):
        super().__init__()
        self.lrs, self.norms = [], []

    def after_backward(self, ctx):
        self.lrs.append(ctx.optimizer.param_groups[0]["lr"])
        grads = [p.grad for p in ctx.heads.parameters() if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())


def _train_step(two_step, **train):
    spec = streams.load(str(two_step))
    scenario = get_scenario(spec)
    heads = Heads(scenario.in_dims, 24)
    rec = Recorder()
    out = Trainer(scenario, rec, heads, TrainConfig(**train), LossConfig(), seed=0).train_experience(0)
    return rec, out["iterations"]


def test_linear_schedule_decays_to_zero_within_each_step(two_step):
    rec, n = _train_step(two_step, epochs=2, lr=0.01, schedule="linear")
    assert n > 4 and len(rec.lrs) == n
    assert rec.lrs == pytest.approx([0.01 * (n - i) / n for i in range(n)])
    const, _ = _train_step(two_step, epochs=2, lr=0.01)
    assert const.lrs == [0.01] * n


def test_clipping_bounds_the_gradient_norm_hooks_see(two_step):
    free, _ = _train_step(two_step, epochs=1, lr=0.01)
    limit = sorted(free.norms)[len(free.norms) // 2]          # the median: about half the batches get clipped
    clipped, _ = _train_step(two_step, epochs=1, lr=0.01, clip_grad_norm=limit)
    assert max(clipped.norms) <= limit * (1 + 1e-5)
    assert sum(abs(x - limit) < 1e-4 * limit for x in clipped.norms) >= len(clipped.norms) // 3


def test_bias_decay_switch():
    w, b = torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.ones(3))
    for decay_bias, bias_after in ((True, 1 - 0.1 * 0.5), (False, 1.0)):
        with torch.no_grad():
            w.fill_(1.0), b.fill_(1.0)
        opt = make_optimizer([w, b], TrainConfig(lr=0.1, weight_decay=0.5, decay_bias=decay_bias))
        w.grad, b.grad = torch.zeros_like(w), torch.zeros_like(b)
        opt.step()                              # zero gradient: only the decoupled decay moves a parameter
        assert w.detach().allclose(torch.full((3, 3), 1 - 0.1 * 0.5))
        assert b.detach().allclose(torch.full((3,), bias_after))


def test_invalid_values_are_refused():
    with pytest.raises(BenchError, match="--lr-schedule"):
        TrainConfig(schedule="cosine")
    with pytest.raises(BenchError, match="--clip-grad-norm"):
        TrainConfig(clip_grad_norm=0.0)


def _config(out):
    return json.loads(next(out.glob("toy/runs/vanilla/seed0.json")).read_text())["config"]


@pytest.mark.parametrize("argv,train,loss", [
    ([], dict(schedule="constant", clip_grad_norm=None, decay_bias=True), dict(direction="both", temperature=0.05)),
    (["--protocol", "official"], dict(schedule="linear", clip_grad_norm=1.0, decay_bias=False),
     dict(direction="a2b", temperature=1.0, normalize=False)),
    (["--protocol", "official", "--lr-schedule", "constant", "--clip-grad-norm", "2", "--bias-decay",
      "--loss", "default"], dict(schedule="constant", clip_grad_norm=2.0, decay_bias=True),
     dict(direction="both", temperature=0.05)),
])
def test_protocol_preset_and_overrides_reach_the_run_record(tmp_path, argv, train, loss):
    assert main(["--stream", "toy", "--methods", "vanilla", "--seeds", "1", "--epochs", "1", "--no-figures",
                 "--out", str(tmp_path), *argv]) == 0
    cfg = _config(tmp_path)
    assert {k: cfg["train"][k] for k in train} == train
    assert {k: cfg["loss"][k] for k in loss} == loss


def _stream_with_settings(tmp_path, settings):
    from bench.streams import builtin_streams
    p = tmp_path / "toy-set.toml"
    p.write_text(builtin_streams()["toy"].read_text().replace('name = "toy"', 'name = "toy-set"') + settings)
    return p


def test_stream_settings_per_encoder_apply_under_the_command_line(tmp_path):
    stream = _stream_with_settings(tmp_path, "\n[settings.big.train]\nlr = 0.003\n[settings.big.l2]\nstrength = 7\n")
    common = ["--stream", str(stream), "--methods", "l2", "--seeds", "1", "--epochs", "1", "--no-figures"]

    def config(out, *extra):
        assert main([*common, "--out", str(out), *extra]) == 0
        return json.loads(next(out.glob("*/runs/l2*/seed0.json")).read_text())["config"]

    plain = config(tmp_path / "a")                                  # no --encoder: the settings do not apply
    assert plain["method_params"]["strength"] != 7 and plain["train"]["lr"] != 0.003
    applied = config(tmp_path / "b", "--encoder", "big")
    assert applied["method_params"]["strength"] == 7.0 and applied["train"]["lr"] == 0.003
    over = config(tmp_path / "c", "--encoder", "big", "--set", "l2.strength=2", "--lr", "0.01")
    assert over["method_params"]["strength"] == 2.0 and over["train"]["lr"] == 0.01


@pytest.mark.parametrize("settings,message", [
    ("\n[settings.big.nosuch]\nx = 1\n", "[settings.big.nosuch]: unknown method 'nosuch'"),
    ("\n[settings.big.l2]\nnosuch = 1\n", "[settings.big.l2]: method 'l2' has no option 'nosuch'"),
    ("\n[settings.big.train]\nlr = \"fast\"\n", "[settings.big.train]: key 'lr' must be a float"),
])
def test_bad_stream_settings_name_file_and_key(tmp_path, capsys, settings, message):
    stream = _stream_with_settings(tmp_path, settings)
    assert main(["--stream", str(stream), "--methods", "l2", "--encoder", "big", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(stream) in err and len(err.strip().splitlines()) == 1

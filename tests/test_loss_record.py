"""The training loss per epoch of every step, and the flag on unstable training."""
import json
import math

from bench import streams
from bench.config import LossConfig, TrainConfig
from bench.heads import Heads
from bench.method import Method
from bench.run import main
from bench.runner import get_scenario
from bench.trainer import RISE, SPIKE, Trainer, loss_record


def test_epoch_means_and_the_windows():
    losses = [[4.0, 3.0, 2.0, 2.0, 1.0, 1.0], [3.0, 2.0, 1.0, 1.0, 0.5, 0.5]]
    rec = loss_record(losses, epochs=3)
    assert rec["loss"] == [3.5, 2.0, 1.0] and rec["infonce"] == [2.5, 1.0, 0.5]
    assert rec["loss_start"] == 4.0 and rec["loss_end"] == 1.0 and rec["loss_peak"] == 4.0
    assert "loss_rose" not in rec


def test_unstable_training_is_flagged():
    n = 40
    healthy = [4.0 - 2.0 * i / n for i in range(n)]
    assert "loss_rose" not in loss_record([healthy, healthy], 4)
    rising = [2.0 + 2.0 * i / n for i in range(n)]                 # ends ~1.9x its start
    assert loss_record([rising, rising], 4)["loss_rose"]
    spike = healthy[:]
    spike[10] = 4.0 * SPIKE * 1.1                                  # one exploding batch, then recovered
    assert loss_record([spike, spike], 4)["loss_rose"]
    assert not loss_record([healthy[:10] + [4.0 * SPIKE * 0.5] + healthy[11:]] * 2, 4).get("loss_rose")
    nan = healthy[:]
    nan[-1] = math.nan
    assert loss_record([nan, nan], 4)["loss_rose"]
    slight = [2.0] * 20 + [2.0 * RISE * 0.95] * 20                  # within the tolerance
    assert not loss_record([slight, slight], 4).get("loss_rose")


class Penalty(Method):
    """Adds a constant 1 to every batch's loss: the optimised loss and the InfoNCE part differ by 1."""

    def before_backward(self, ctx):
        ctx.loss = ctx.loss + 1.0


def test_the_trainer_records_the_optimised_loss_and_the_infonce_per_epoch(two_step):
    spec = streams.load(str(two_step))
    scenario = get_scenario(spec)
    heads = Heads(scenario.in_dims, 24)
    out = Trainer(scenario, Penalty(), heads, TrainConfig(epochs=3, lr=0.0), LossConfig(), seed=0).train_experience(0)
    assert len(out["loss"]) == len(out["infonce"]) == 3
    for total, nce in zip(out["loss"], out["infonce"]):
        assert abs(total - nce - 1.0) < 1e-5
    assert all(v > 0 for v in out["infonce"])


def test_a_diverging_run_is_flagged_in_the_run_file_and_the_log(tmp_path, capsys):
    args = ["--stream", "toy", "--methods", "vanilla", "--seeds", "1", "--epochs", "2", "--no-figures",
            "--out", str(tmp_path)]
    assert main(args + ["--lr", "1e3"]) == 0
    err = capsys.readouterr().err
    rec = json.loads((tmp_path / "toy" / "runs" / "vanilla" / "seed0.json").read_text())
    assert rec["warnings"] and all("unstable training" in w for w in rec["warnings"])
    assert f"warning: vanilla seed 0: {rec['warnings'][0]}" in err
    steps = [s for s in rec["timings"]["steps"] if s["iterations"]]
    assert all(len(s["loss"]) == 2 for s in steps)
    # the default learning rate trains without a flag
    assert main(args + ["--force"]) == 0
    rec = json.loads((tmp_path / "toy" / "runs" / "vanilla" / "seed0.json").read_text())
    assert "warnings" not in rec and "warning:" not in capsys.readouterr().err

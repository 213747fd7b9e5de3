"""Device handling: every registered method's hooks and the evaluator run on the ``meta`` device.

There is no GPU in CI. A meta tensor has a device and a shape but no values, and an operation that mixes it
with a CPU tensor fails, so a run on ``meta`` finds any tensor a method or the evaluator creates on the CPU
by default, or any value read in the middle of a step without ``bench.devices.host``.
"""
import pytest
from conftest import TWO_STEP

from bench import registry
from bench.config import RunSpec, TrainConfig
from bench.executor import start_method
from bench.run import main
from bench.streams import load

# A third step whose two heads no earlier step trained (LwF and DER++ take other paths there).
THREE_STEP = TWO_STEP.replace('name = "two-step"', 'name = "three-step"') + """
[modalities.vision]
misalignment = 0.3
noise = 0.8
[modalities.depth]
misalignment = 0.4
noise = 0.8
[sources.c]
modalities = ["vision", "depth"]
classes = 6
train = 320
test = 64
[[steps]]
source = "c"
pair = ["vision", "depth"]
metrics = ["recall"]
"""


@pytest.fixture(scope="module")
def three_step(tmp_path_factory):
    p = tmp_path_factory.mktemp("streams") / "three-step.toml"
    p.write_text(THREE_STEP)
    return load(str(p))


# Options that take other code paths: LwF without its term 2, DER++ replay draws too small for a group of two.
VARIANTS = [(m, {}) for m in registry.names()] + [("lwf", {"shared_modalities": False}),
                                                  ("derpp", {"replay_batch": 2, "heads": "all"})]


@pytest.mark.parametrize("method,options", VARIANTS, ids=[f"{m}{o or ''}" for m, o in VARIANTS])
def test_every_method_runs_on_the_meta_device(three_step, method, options):
    from bench.runner import run_one
    if "replay_batch" in registry.get(method).defaults:
        options = {"replay_batch": 16, **options}
    record = run_one(RunSpec.create(three_step, method, options, 0, train=TrainConfig(epochs=1, batch_size=32),
                                    device="meta"))
    assert len(record["matrices"]["r10"]) == 4 and all(len(row) == 3 for row in record["matrices"]["r10"])
    assert len(record["timings"]["steps"]) == 3


def test_the_command_line_refuses_the_meta_device(tmp_path, capsys):
    assert main(["--stream", "toy", "--methods", "vanilla", "--device", "meta", "--out", str(tmp_path)]) == 2
    assert "--device meta holds no values" in capsys.readouterr().err


def test_workers_are_spawned_off_the_cpu(three_step):
    cpu = RunSpec.create(three_step, "vanilla", {}, 0)
    cuda = RunSpec.create(three_step, "vanilla", {}, 0, device="cuda:0")
    assert start_method([cpu, cpu]) == "fork"
    assert start_method([cpu, cuda]) == "spawn"


def _host_calls(three_step, method, options, epochs, monkeypatch):
    """How many times values are read on the host (``bench.devices.host``, the only way a value may be read:
    the meta-device test above fails on any other) while one run trains ``epochs`` epochs per step."""
    import sys

    import bench.devices
    from bench.runner import run_one
    real, calls = bench.devices.host, []

    def counting(x):
        calls.append(1)
        return real(x)
    for mod in list(sys.modules.values()):                 # every module that imported it by name
        if getattr(mod, "host", None) is real:
            monkeypatch.setattr(mod, "host", counting)
    run_one(RunSpec.create(three_step, method, options, 0, train=TrainConfig(epochs=epochs, batch_size=32)))
    return len(calls)


# Methods whose every iteration needs a value on the host by design: GEM solves its QP there, A-GEM tests the
# sign of a dot product to choose its update.
SYNCING = {"gem", "agem"}


@pytest.mark.parametrize("method,options", [(m, {}) for m in registry.names() if m not in SYNCING]
                         + [("dns", {"project": "gradient"})], ids=lambda v: str(v))
def test_no_host_synchronisation_in_the_hot_loop(three_step, method, options, monkeypatch):
    """Host reads per run do not grow with the number of iterations: they happen at step boundaries
    (projectors, loss records, checks), never per batch — what keeps a GPU run asynchronous."""
    if "replay_batch" in registry.get(method).defaults:
        options = {"replay_batch": 16, **options}
    one = _host_calls(three_step, method, options, 1, monkeypatch)
    three = _host_calls(three_step, method, options, 3, monkeypatch)
    assert one == three, f"{method}: {one} host reads with 1 epoch per step, {three} with 3"

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
# never read (or write) the developer's own tuned settings: an empty user settings folder per test session
_settings = __import__("tempfile").TemporaryDirectory(prefix="cmcl-bench-settings-")   # removed at exit
os.environ["CMCL_BENCH_SETTINGS"] = _settings.name

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# The mechanism tests: methods, metrics, statistics, loss, evaluation, the trainer's hooks; no sweep through a
# subprocess. They are marked `fast` (python -m pytest -m fast: seconds) unless a test says `slow` itself;
# every other test is marked `slow`.
FAST_MODULES = {"test_cflat", "test_der_co2l", "test_dns", "test_evaluate", "test_hook_order", "test_intervals",
                "test_loss", "test_loss_record", "test_lwf", "test_methods", "test_metrics", "test_nullspace",
                "test_regularizers", "test_replay", "test_request", "test_training_options", "test_compare",
                "test_budget"}


def pytest_collection_modifyitems(items):
    for item in items:
        fast = item.module.__name__.rpartition(".")[2] in FAST_MODULES and item.get_closest_marker("slow") is None
        item.add_marker(pytest.mark.fast if fast else pytest.mark.slow)

TWO_STEP = """
name = "two-step"
description = "step 2 shares text with step 1; the video head is untouched by step 2"
[simulation]
seed = 3
dim = 24
common_dim = 4
specific_dim = 6
floor_noise = 0.0     # exact low-rank subspaces: a tiny threshold still leaves room to learn
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
[[steps]]
source = "a"
pair = ["text", "video"]
metrics = ["acc", "recall"]
[[steps]]
source = "b"
pair = ["text", "audio"]
metrics = ["recall"]
"""


@pytest.fixture
def two_step(tmp_path):
    p = tmp_path / "two-step.toml"
    p.write_text(TWO_STEP)
    return p


def scalar(x) -> float:
    """A loss or penalty as a float, whether a method returned a tensor or a plain 0.0."""
    return float(x.detach()) if torch.is_tensor(x) else float(x)


def perturb(lin, scale=0.3, seed=7):
    """Move a head's weight and bias by a seeded random amount (a model that has changed)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lin.weight.add_(scale * torch.randn(lin.weight.shape, generator=g))
        lin.bias.add_(scale * torch.randn(lin.bias.shape, generator=g))


def run_method(stream, method, options=None, seed=0, train=None, loss=None, **settings) -> dict:
    """One run through the runner, as the CLI plans it (options resolved from the method's defaults)."""
    from bench.config import LossConfig, RunSpec, TrainConfig
    from bench.runner import run_one
    return run_one(RunSpec.create(stream, method, options or {}, seed, train=train or TrainConfig(),
                                  loss=loss or LossConfig(), **settings))

"""What a method holds beyond the heads (bench.budget): counted from its tensors, each once, the live heads and
the optimiser left out; the peak over the steps' ends goes into every run file and the table."""
import pytest
import torch

from bench.budget import state_bytes, trainable_params
from bench.heads import Heads


class _Holder:               # stands for a method's helper object (its module must be the methods package)
    __module__ = "methods._fake"

    def __init__(self, t):
        self.rows = {0: (t, t[:2])}


class _Method:
    __module__ = "methods._fake"


def test_state_bytes_counts_each_held_tensor_once_and_not_the_heads():
    heads = Heads({"text": 8, "audio": 4}, out_dim=8, seed=0)
    m = _Method()
    big = torch.zeros(10, 8)                          # 320 bytes
    m.buffer = _Holder(big)                           # the tensor and a view of two of its rows
    m.same = big                                      # the same tensor again: counted once
    m.importance = {"text": torch.zeros(8, 8, dtype=torch.float64)}      # 512 bytes
    m.live = list(heads.parameters())                 # the heads themselves: not extra state
    m.anchor = heads["text"].weight.detach()          # a view of a live parameter: no extra memory
    m.opt = torch.optim.SGD(heads.parameters(), lr=0.1)
    m.gen = torch.Generator()
    assert state_bytes(m, heads) == 320 + 2 * 8 * 4 + 512
    assert trainable_params(heads) == 8 * 8 + 8 + 4 * 8 + 8


def _budget(tmp_path, method, *sets):
    import json

    from bench import run
    out = tmp_path / method
    assert run.main(["--stream", "toy", "--methods", method, "--seeds", "1", "--epochs", "1", "--no-figures",
                     "--out", str(out), *sets]) == 0
    return json.loads(next((out / "toy" / "runs").glob("*/seed0.json")).read_text())


@pytest.mark.slow
def test_run_files_record_the_peak_state_and_the_table_shows_it(tmp_path):
    vanilla, lwf = _budget(tmp_path, "vanilla"), _budget(tmp_path, "lwf")
    assert vanilla["budget"]["state_bytes"] == 0 and vanilla["summary"]["state_mib"] == 0.0
    # LwF drops its snapshot of the old heads at each step's end: its peak is that snapshot (two heads)
    snapshot = sum(p.numel() * 4 for p in Heads({"text": 32, "video": 32}, out_dim=32, seed=0).parameters())
    assert lwf["budget"]["state_bytes"] >= snapshot
    small, large = (_budget(tmp_path / s, "er", "--set", f"er.buffer_size={s}") for s in ("50", "100"))
    # 50 more pairs in the buffer: their features (32 + 32 floats, 256 bytes) and their slots' bookkeeping
    assert 50 * 256 <= large["budget"]["state_bytes"] - small["budget"]["state_bytes"] <= 50 * 320
    assert vanilla["budget"]["trainable_params"] == lwf["budget"]["trainable_params"] > 0
    table = (tmp_path / "lwf" / "toy" / "table.md").read_text()
    assert "State MiB" in table and "| Params |" in table

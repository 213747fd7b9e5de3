"""The Python API runs a method as the command line does (same defaults, same record) and returns the
trained heads; --save-heads stores them after every step."""
import json

import pytest
import torch

from bench import api
from bench.errors import BenchError
from bench.run import main


def _stable(record):
    """A record without what differs from one execution to the next (times)."""
    out = json.loads(json.dumps(record))
    out.pop("schema", None)                     # stamped when the file is written
    out["timings"].pop("wall_seconds")
    out["timings"].pop("train_seconds")
    out["timings"].pop("peak_rss_mb", None)
    for s in out["timings"]["steps"]:
        s.pop("train_seconds")
    out["summary"].pop("train_seconds")
    return out


def test_the_api_gives_the_cli_run_file_and_the_trained_heads(tmp_path, monkeypatch):
    # sim-paper's own [train] sets lr 5e-4 and its tuned settings set dns' lambda_min: the API must apply both
    cli = ["--methods", "dns", "--seeds", "1", "--epochs", "1", "--no-figures", "--save-heads", "--out", str(tmp_path)]
    assert main(cli) == 0
    stream = tmp_path / "sim-paper"
    on_disk = json.loads((stream / "runs" / "dns" / "seed0.json").read_text())
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    result = api.run("dns", "sim-paper", 0, epochs=1)
    assert not list((tmp_path / "cwd").iterdir())                 # the API wrote nothing (no results/)
    assert _stable(result.record) == _stable(on_disk)
    assert result.record["config"]["train"]["lr"] == 5e-4
    saved = sorted(p.name for p in (stream / "heads" / "dns" / "seed0").iterdir())
    assert saved == sorted(f"step{k}.pt" for k in range(1, 12))
    last = torch.load(stream / "heads" / "dns" / "seed0" / "step11.pt")
    for m, lin in result.heads.linears.items():
        assert torch.equal(lin.weight.detach(), last[m]["weight"]) and torch.equal(lin.bias.detach(), last[m]["bias"])


def test_options_flags_and_saving(tmp_path):
    r = api.run("dns", "toy", 0, epochs=1, options={"lambda_min": 0.5, "project": "gradient"}, save=True,
                out=str(tmp_path))
    assert r.record["config"]["method_params"]["lambda_min"] == 0.5
    assert r.record["label"] == "dns[lambda_min=0.5,project=gradient]"
    assert json.loads(r.run.path(tmp_path).read_text())["config_hash"] == r.record["config_hash"]


@pytest.mark.parametrize("kwargs, message", [
    ({"epoch": 1}, "unknown flag 'epoch'"),
    ({"grids": ["x"]}, "unknown flag 'grids'"),
    ({"lr": float("nan")}, "--lr must be a finite number"),
    ({"options": {"lambda_min": -1}}, "option dns.lambda_min must be >= 0"),
    ({"seed": -1}, "seed must be an integer from 0 to 4294967295"),
    ({"seed": 2 ** 64}, "seed must be an integer from 0 to 4294967295"),
])
def test_bad_input_is_the_command_lines_one_line_error(kwargs, message):
    with pytest.raises(BenchError, match=None) as e:
        api.run("dns", "toy", **kwargs)
    assert message in str(e.value)


def test_the_api_runs_one_task_order_and_world():
    from bench import api
    from bench.errors import BenchError
    from bench.scenario import order_permutation
    plain = api.run("vanilla", "toy", 0, epochs=1)
    other = api.run("vanilla", "toy", 0, epochs=1, order=1, world=1)
    names = [t["name"] for t in plain.record["tasks"]]
    assert "order" not in plain.record["config"] and (other.record["config"]["order"], other.record["config"]["world"]) == (1, 1)
    assert [t["name"] for t in other.record["tasks"]] == [names[i] for i in order_permutation(len(names), 1)]
    with pytest.raises(BenchError, match="world must be an integer >= 0"):
        api.run("vanilla", "toy", 0, world=-1)
    with pytest.raises(BenchError, match="unknown flag 'orders'"):
        api.run("vanilla", "toy", 0, orders=2)

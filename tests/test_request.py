"""The typed request and the settings' five layers (bench.request, bench.settings)."""
import json

import pytest

from bench.request import Request
from bench.run import parse_args, plan
from bench.settings import PRECEDENCE, layered


def test_layered_later_layers_win_and_name_their_source():
    values, sources = layered([("defaults", {"a": 1, "b": 1, "c": 1}, None), ("encoder", {"b": 2, "c": 2}, "enc"),
                               ("tuned", {"c": 3}, "tuned (f)"), ("command line", {}, "--set")])
    assert values == {"a": 1, "b": 2, "c": 3}
    assert sources == {"b": "enc", "c": "tuned (f)"}          # the defaults are no source


def test_layers_out_of_order_are_a_programming_error():
    assert PRECEDENCE == ("defaults", "stream", "encoder", "tuned", "command line")
    with pytest.raises(ValueError):
        layered([("tuned", {}, None), ("encoder", {}, None)])


def _stream(tmp_path):
    from bench.streams import builtin_streams, load
    p = tmp_path / "toy-set.toml"
    p.write_text(builtin_streams()["toy"].read_text().replace('name = "toy"', 'name = "toy-set"')
                 + "\n[train]\nepochs = 3\nbatch_size = 16\nlr = 0.002\n"
                 + "\n[settings.big.train]\nbatch_size = 32\nlr = 0.004\n[settings.big.l2]\nstrength = 7\n")
    tuned = {"schema": 1, "stream": "toy-set", "stream_sha256": load(str(p)).sha256,
             "methods": {"l2": {"chosen": {"strength": 9.0}}}}
    (tmp_path / "toy-set.tuned.json").write_text(json.dumps(tuned))
    return p


def _run(tmp_path, *argv):
    args = parse_args(["--stream", str(_stream(tmp_path)), "--methods", "l2", "--seeds", "1", "--encoder", "big",
                       "--out", str(tmp_path / "out"), *argv])
    return plan(Request.from_args(args)).runs[0]


def test_each_of_the_five_layers_overrides_the_one_before(tmp_path):
    run = _run(tmp_path, "--lr", "0.01")
    # defaults (epochs 5, batch 64, lr 1e-4) < stream [train] < [settings.big.train] < the flag
    assert (run.train.epochs, run.train.batch_size, run.train.lr) == (3, 32, 0.01)
    # l2's default < [settings.big.l2] (7) < tuned (9)
    assert run.options["strength"] == 9.0
    assert run.option_sources == {"strength": "tuned (toy-set.tuned.json)"}
    by_hand = _run(tmp_path, "--set", "l2.strength=2")                # < --set
    assert by_hand.options["strength"] == 2.0 and by_hand.option_sources == {"strength": "--set"}
    assert by_hand.train.lr == 0.004


def test_the_command_line_and_flags_build_the_same_request():
    args = parse_args(["--methods", "dns,er", "--seeds", "0,2", "--set", "dns.lambda_min=0.1", "--lr", "0.01",
                       "--loss", "official", "--jobs", "2", "--no-figures"])
    flags = Request.from_flags(methods=("dns", "er"), seeds=(0, 2), sets={"dns": {"lambda_min": "0.1"}}, lr=0.01,
                               loss="official", jobs=2, no_figures=True)
    assert Request.from_args(args) == flags
    assert flags.training.lr == 0.01 and flags.loss.preset == "official" and flags.execution.jobs == 2

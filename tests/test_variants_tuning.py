"""Variants, grids, the validation split, tuning on validation pairs only, and tuned settings applied."""
import json
import shutil

import pytest
import torch

from bench import run, streams, tune
from bench.streams import builtin_streams

TOY = ["--stream", "toy", "--seeds", "1", "--epochs", "1", "--no-figures"]


def _rows(table_md):
    return [line.split("|")[1].strip() for line in table_md.splitlines()
            if line.startswith("| ") and not line.startswith("| method |")]


def test_a_grid_of_three_values_for_two_methods_in_one_command(tmp_path):
    assert run.main(TOY + ["--methods", "dns,l2", "--grid", "dns.lambda_min=0.001,0.01,0.1",
                           "--grid", "l2.strength=0.3,1,3", "--out", str(tmp_path)]) == 0
    rows = _rows((tmp_path / "toy" / "table.md").read_text())
    assert set(rows) == {"dns[lambda_min=0.001]", "dns", "dns[lambda_min=0.1]",      # 0.01 is dns's default
                         "l2[strength=0.3]", "l2", "l2[strength=3]"}
    rec = json.loads((tmp_path / "toy" / "runs" / "dns[lambda_min=0.1]" / "seed0.json").read_text())
    assert rec["label"] == "dns[lambda_min=0.1]" and rec["config"]["method_params"]["lambda_min"] == 0.1
    assert rec["config"]["option_sources"] == {"lambda_min": "--grid"}
    # two --grid options of one method: the cartesian product
    assert run.main(TOY + ["--methods", "derpp", "--grid", "derpp.alpha=1,3", "--grid", "derpp.beta=0.5,1",
                           "--out", str(tmp_path / "b"), "--epochs", "0"]) == 0
    assert len(list((tmp_path / "b" / "toy" / "runs").iterdir())) == 4


def test_set_variants_coexist_and_a_label_names_one(tmp_path):
    for value in ("0.01", "1e-4"):
        assert run.main(TOY + ["--methods", "dns", "--set", f"dns.lambda_min={value}", "--out", str(tmp_path)]) == 0
    assert run.main(TOY + ["--methods", "dns", "--set", "dns.lambda_min=0.5", "--label", "dns=loose",
                           "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "toy" / "runs").iterdir()) == ["dns", "dns[lambda_min=0.0001]", "loose"]
    assert set(_rows((tmp_path / "toy" / "table.md").read_text())) == {"dns", "dns[lambda_min=0.0001]", "loose"}


@pytest.mark.parametrize("argv,message", [
    (["--methods", "dns", "--grid", "dns.lambda_min=0.1", "--set", "dns.lambda_min=0.2"], "given by both --set and --grid"),
    (["--methods", "dns", "--grid", "nope.x=1"], "unknown method 'nope'"),
    (["--methods", "dns", "--grid", "dns.lambda_min"], "--grid expects METHOD.PARAM=V1,V2"),
    (["--methods", "dns", "--grid", "dns.lambda_min=x,y"], "option dns.lambda_min expects a number"),
    (["--methods", "vanilla", "--grid", "dns.lambda_min=0.1"], "which --methods does not run"),
    (["--methods", "dns", "--grid", "dns.lambda_min=0.1,0.2", "--label", "dns=x"], "has a --grid"),
    (["--methods", "dns", "--label", "dns=a/b"], "a label must not contain '/'"),
])
def test_bad_variants_are_one_line_errors(tmp_path, capsys, argv, message):
    assert run.main(TOY + argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "toy").exists()


def test_two_stream_files_with_one_name_never_share_a_folder(tmp_path, capsys):
    other = tmp_path / "toy.toml"
    other.write_text(builtin_streams()["toy"].read_text().replace("seed = ", "seed = 1", 1))
    assert run.main(TOY + ["--methods", "vanilla", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert run.main(["--stream", str(other)] + TOY[2:] + ["--methods", "vanilla", "--out", str(tmp_path / "r")]) == 2
    assert "holds runs of another stream file named 'toy'" in capsys.readouterr().err


def test_validation_split_is_fixed_disjoint_and_shared_by_a_sources_steps():
    from bench.runner import get_scenario
    from bench.scenario import VALIDATION_FRACTION
    spec = streams.load("sim-paper")
    full, val = get_scenario(spec), get_scenario(spec, split="validation")
    assert not val.probes
    by_source = {}
    for t_full, t_val in zip(full.tasks, val.tasks):
        n = len(t_full.train_source)
        held, kept = set(t_val.test_source.ids), set(t_val.train_source.ids)
        assert len(held) == round(VALIDATION_FRACTION * n) and not held & kept and held | kept == set(t_full.train_source.ids)
        assert not held & set(t_full.test_source.ids)
        by_source.setdefault(t_full.step.source, set()).add(frozenset(held))
    assert all(len(v) == 1 for v in by_source.values())        # the same pairs for every step of a source
    assert len(by_source["vggsound_s"]) == 1 and sum(t.step.source == "vggsound_s" for t in full.tasks) == 3


def _bank_stream(tmp_path):
    """A two-step stream of feature banks (train and test files) in a temporary folder."""
    from bench.features import bank
    g = torch.Generator().manual_seed(0)
    for s, mods in (("s1", ("text", "video")), ("s2", ("text", "audio"))):
        for split, n in (("train", 160), ("test", 48)):
            z = torch.randn(n, 4, generator=g)
            feats = {m: z @ torch.randn(4, 8, generator=g) + 0.3 * torch.randn(n, 8, generator=g) for m in mods}
            bank.write_split(bank.bank_file(tmp_path / "banks", "enc", s, split),
                             bank.SplitFeatures(features=feats, ids=[f"{s}{split}{i}" for i in range(n)]),
                             source=s, split=split, encoder="enc")
    path = tmp_path / "bk.toml"
    path.write_text('name = "bk"\n[train]\nlr = 0.01\nepochs = 2\n'
                    '[sources.s1]\nkind = "bank"\nmodalities = ["text", "video"]\n'
                    '[sources.s2]\nkind = "bank"\nmodalities = ["text", "audio"]\n'
                    '[[steps]]\nsource = "s1"\npair = ["text", "video"]\nmetrics = ["recall"]\n'
                    '[[steps]]\nsource = "s2"\npair = ["text", "audio"]\nmetrics = ["recall"]\n')
    return path


def _tune(banks, stream, out, write):
    argv = ["--stream", str(stream), "--encoder", "enc", "--banks", str(banks), "--methods", "ewc,l2",
            "--seeds", "1", "--out", str(out), "--write", str(write)]
    assert tune.main(argv) == 0
    data = json.loads(write.read_text())
    return {m: (e["chosen"], [c["per_seed"] for c in e["candidates"]]) for m, e in data["methods"].items()}


def test_tuning_never_reads_the_test_sets(tmp_path):
    """Changing every test file changes nothing tuning selects or scores; nor does deleting them."""
    from bench.features import bank
    stream = _bank_stream(tmp_path)
    first = _tune(tmp_path / "banks", stream, tmp_path / "o1", tmp_path / "t1.json")
    changed = tmp_path / "changed"                      # another folder: nothing cached from the first tuning
    shutil.copytree(tmp_path / "banks", changed)
    g = torch.Generator().manual_seed(9)
    for p in changed.rglob("test.h5"):
        old = bank.read_split(p)
        new = bank.SplitFeatures(features={m: torch.randn(x.shape, generator=g) for m, x in old.features.items()},
                                 ids=old.ids)
        p.unlink()
        bank.write_split(p, new, source=p.parent.name, split="test", encoder="enc")
    assert _tune(changed, stream, tmp_path / "o2", tmp_path / "t2.json") == first
    gone = tmp_path / "gone"
    shutil.copytree(tmp_path / "banks", gone)
    for p in gone.rglob("test.h5"):
        p.unlink()
    second = _tune(gone, stream, tmp_path / "o3", tmp_path / "t3.json")
    assert first == second
    assert len({tuple(s) for s in (x for _, per in first.values() for x in per)}) > 1     # scores differ by setting


def test_tuned_settings_are_applied_recorded_and_ignored_with_untuned(tmp_path, capsys):
    stream = tmp_path / "mytoy.toml"
    shutil.copy(builtin_streams()["toy"], stream)
    common = ["--stream", str(stream), "--methods", "l2", "--seeds", "1", "--epochs", "1", "--no-figures"]
    assert tune.main(common + ["--grid", "l2.strength=0.1,5", "--out", str(tmp_path / "t")]) == 0
    tuned = json.loads((tmp_path / "mytoy.tuned.json").read_text())
    assert tuned["stream_sha256"] == streams.load(str(stream)).sha256 and tuned["criterion"] == "score"
    assert {"seeds", "code_version", "date", "train", "candidates"} <= set(tuned) | set(tuned["methods"]["l2"])
    chosen = tuned["methods"]["l2"]["chosen"]["strength"]
    assert run.main(common + ["--out", str(tmp_path / "r")]) == 0
    rec = json.loads((tmp_path / "r" / "toy" / "runs" / "l2" / "seed0.json").read_text())
    assert rec["config"]["method_params"]["strength"] == chosen
    assert rec["config"]["option_sources"] == {"strength": "tuned (mytoy.tuned.json)"}
    assert run.main(common + ["--out", str(tmp_path / "r"), "--untuned"]) == 0
    plain = json.loads((tmp_path / "r" / "toy-untuned" / "runs" / "l2" / "seed0.json").read_text())
    assert plain["config"]["method_params"]["strength"] == 1.0 and "option_sources" not in plain["config"]
    # settings tuned on another version of the stream file are not applied
    stream.write_text(stream.read_text() + "\n# edited\n")
    capsys.readouterr()
    assert run.main(common + ["--out", str(tmp_path / "r2")]) == 0
    assert "tuned on another version of stream file" in capsys.readouterr().err
    rec = json.loads((tmp_path / "r2" / "toy" / "runs" / "l2" / "seed0.json").read_text())
    assert rec["config"]["method_params"]["strength"] == 1.0


def test_every_search_space_holds_the_default_and_only_options():
    from bench import registry
    from bench.method import Method
    for name in registry.names():
        cls = registry.get(name)
        for k, values in cls.search_space.items():
            assert cls.defaults[k] in values and cls.resolve({k: values[0]})
    with pytest.raises(TypeError, match="search_space"):
        type("Bad", (Method,), {"defaults": {"x": 1.0}, "search_space": {"x": [2.0]}})
    assert tune.main(["--stream", "toy", "--methods", "vanilla"]) == 2       # nothing to tune: one-line error


def _tuned_file(stream, methods):
    (stream.parent / (stream.stem + ".tuned.json")).write_text(json.dumps(
        {"schema": 1, "stream_sha256": streams.load(str(stream)).sha256,
         "methods": {m: {"chosen": c} for m, c in methods.items()}}))


def test_a_method_left_at_its_defaults_beside_tuned_ones_is_said_and_marked(tmp_path, capsys):
    stream = tmp_path / "mytoy.toml"
    shutil.copy(builtin_streams()["toy"], stream)
    _tuned_file(stream, {"l2": {"strength": 0.1}})
    common = ["--stream", str(stream), "--seeds", "1", "--epochs", "0", "--out", str(tmp_path / "r")]
    capsys.readouterr()
    assert run.main(common + ["--methods", "l2,mas,vanilla"]) == 0
    err = capsys.readouterr().err
    assert "no tuned settings for mas:" in err          # vanilla has nothing to tune; l2 is tuned
    table = (tmp_path / "r" / "toy" / "table.md").read_text()
    assert set(_rows(table)) == {"l2", "mas †", "vanilla"} and "† untuned" in table
    assert r"mas$^\dagger$" in (tmp_path / "r" / "toy" / "table.tex").read_text()
    assert "untuned: the stream's tuned settings have none" in (tmp_path / "r" / "toy" / "report.md").read_text()
    runs = tmp_path / "r" / "toy" / "runs"
    assert json.loads((runs / "mas" / "seed0.json").read_text())["config"]["tuned"] is False
    assert "tuned" not in json.loads((runs / "l2" / "seed0.json").read_text())["config"]
    # a method the user sets by hand is not "left at its defaults"
    assert run.main(common + ["--methods", "mas", "--set", "mas.strength=4"]) == 0
    assert "no tuned settings" not in capsys.readouterr().err
    assert "tuned" not in json.loads((runs / "mas[strength=4]" / "seed0.json").read_text())["config"]


def test_tuning_a_built_in_stream_writes_to_the_user_settings_folder_never_the_package(tmp_path, capsys,
                                                                                     monkeypatch):
    monkeypatch.setenv("CMCL_BENCH_SETTINGS", str(tmp_path / "settings"))
    shipped = builtin_streams()["toy"].parent
    before = sorted(p.name for p in shipped.iterdir())
    common = ["--stream", "toy", "--seeds", "1", "--epochs", "1", "--no-figures", "--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert tune.main(common + ["--methods", "l2", "--grid", "l2.strength=0.1,5"]) == 0
    target = tmp_path / "settings" / "tuned" / "toy.tuned.json"
    assert f"written to {target}" in capsys.readouterr().err
    assert sorted(p.name for p in shipped.iterdir()) == before
    # tuning another method keeps l2's entry, with the provenance of the tuning that chose it
    assert tune.main(common + ["--methods", "ewc", "--grid", "ewc.strength=1,10"]) == 0
    methods = json.loads(target.read_text())["methods"]
    assert set(methods) == {"l2", "ewc"} and methods["l2"]["tuned_by"]["file"] == str(target)
    assert run.main(common + ["--methods", "l2"]) == 0
    assert "from " + str(target) in capsys.readouterr().err
    rec = json.loads((tmp_path / "o" / "toy" / "runs" / "l2" / "seed0.json").read_text())
    assert rec["config"]["option_sources"] == {"strength": f"tuned ({target})"}


def test_an_unwritable_tuned_settings_target_is_refused_before_any_tuning_run(tmp_path, capsys):
    assert tune.main(["--stream", "toy", "--methods", "l2", "--seeds", "1", "--out", str(tmp_path / "o"),
                      "--write", "/proc/x/t.json"]) == 2
    assert "--write /proc/x" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_stream_without_tuned_settings_says_so_and_names_the_command(tmp_path, capsys):
    from bench import run
    assert run.main(["--stream", "toy", "--methods", "vanilla,ewc", "--seeds", "1", "--epochs", "1", "--no-figures",
                     "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert ("note: stream 'toy' has no tuned settings: ewc run at their defaults; python -m bench.tune --stream toy "
            "tunes them on validation pairs") in err
    assert run.main(["--stream", "toy", "--methods", "vanilla,ewc", "--seeds", "1", "--epochs", "1", "--no-figures",
                     "--out", str(tmp_path), "--untuned"]) == 0
    assert "no tuned settings" not in capsys.readouterr().err          # asked for the defaults

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
            "--out", str(out), "--write", str(write)]
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
    assert tune.main(common + ["--seeds", "3", "--grid", "l2.strength=0.1,5", "--out", str(tmp_path / "t")]) == 0
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
    assert tune.main(common + ["--seeds", "3", "--methods", "l2", "--grid", "l2.strength=0.1,5"]) == 0
    target = tmp_path / "settings" / "tuned" / "toy.tuned.json"
    assert f"written to {target}" in capsys.readouterr().err
    assert sorted(p.name for p in shipped.iterdir()) == before
    # tuning another method keeps l2's entry, with the provenance of the tuning that chose it
    assert tune.main(common + ["--seeds", "3", "--methods", "ewc", "--grid", "ewc.strength=1,10"]) == 0
    methods = json.loads(target.read_text())["methods"]
    assert set(methods) == {"l2", "ewc"} and methods["l2"]["tuned_by"]["file"] == str(target)
    assert run.main(common + ["--methods", "l2"]) == 0
    assert "from " + str(target) in capsys.readouterr().err
    rec = json.loads((tmp_path / "o" / "toy" / "runs" / "l2" / "seed0.json").read_text())
    assert rec["config"]["option_sources"] == {"strength": f"tuned ({target})"}


def test_an_unwritable_tuned_settings_target_is_refused_before_any_tuning_run(tmp_path, capsys):
    assert tune.main(["--stream", "toy", "--methods", "l2", "--out", str(tmp_path / "o"),
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


def _row(label, per_run, options=None):
    valid = [v for v in per_run if v is not None]
    return {"label": label, "options": options or {}, "per_seed": per_run, "score": sum(valid) / len(valid)}


def test_paired_gain_is_the_mean_and_standard_error_of_per_run_differences():
    gain, se, n = tune.paired_gain([1.5, 2.4, 3.6, None], [1.0, 2.0, 3.0, 9.0], "higher")
    assert n == 3 and gain == pytest.approx(0.5) and se == pytest.approx(0.1 / 3 ** 0.5)
    assert tune.paired_gain([1.0, 2.0], [1.5, 2.5], "lower")[0] == pytest.approx(0.5)     # lower is better
    assert tune.paired_gain([1.0], [0.0], "higher")[1] is None                           # one pair: no error


def test_a_candidate_replaces_the_default_only_beyond_one_standard_error():
    default = _row("default", [70.0, 72.0, 74.0])
    clear = _row("clear", [70.5, 72.4, 74.6])              # +0.5 ± 0.058: beats the default
    noisy = _row("noisy", [72.0, 71.0, 75.5])              # +0.83 ± 0.93: a higher mean, inside its noise
    chosen, ties = tune.select([default, noisy, clear], "higher")
    assert chosen is clear and not ties
    chosen, ties = tune.select([default, noisy], "higher")
    assert chosen is default and ties                      # every candidate ties: said, default kept
    better = _row("better", [71.0, 73.1, 74.9])            # +0.97 ± 0.06: the best of those that beat it
    assert tune.select([default, clear, better], "higher")[0] is better
    worse = _row("worse", [60.0, 61.0, 62.5])
    chosen, ties = tune.select([default, worse], "higher")
    assert chosen is default and not ties                  # the default is clearly better: no tie
    assert tune.select([default, worse], "lower")[0] is worse     # forgetting-like criteria: lower wins


def test_an_optimum_at_a_grids_edge_extends_it_one_step_within_the_options_range():
    from bench import catalogue
    gpm, nscl, gem = catalogue.get("gpm"), catalogue.get("nscl"), catalogue.get("gem")
    grid = [{"energy": v} for v in (0.97, 0.5, 0.7, 0.9, 0.99)]
    assert tune.extension(gpm, grid, {"energy": 0.5}) == [("energy", {"energy": 0.357})]    # 0.5 · 0.5/0.7
    assert tune.extension(gpm, grid, {"energy": 0.9}) == []                                   # inside
    assert tune.extension(gpm, grid, {"energy": 0.99}) == []        # 1.01 is outside the energy's range
    vals = [{"value": v} for v in (10.0, 2.0, 50.0, 1000.0, 10000.0)]
    assert tune.extension(nscl, vals, {"value": 10000.0}) == [("value", {"value": 100000.0})]
    assert tune.extension(gem, [{"margin": 0.0}, {"margin": 0.5}], {"margin": 0.0}) == []    # at its bound
    assert tune.extension(gem, [{"margin": 0.0}, {"margin": 0.5}], {"margin": 0.5}) == [("margin", {"margin": 1.0})]


def test_tuning_runs_on_seeds_and_worlds_of_its_own_at_least_three(tmp_path, capsys):
    from bench.request import Request
    run_seeds = set(Request().seeds) | set(range(1000))           # every bench.run --seeds N
    assert set(tune.tuning_seeds(tune.DEFAULT_SEEDS)) & run_seeds == set()
    assert len(tune.tuning_seeds(tune.DEFAULT_SEEDS)) >= 3 and tune.tuning_seeds("5,6,7") == (5, 6, 7)
    assert tune.main(["--stream", "toy", "--methods", "l2", "--seeds", "2", "--out", str(tmp_path)]) == 2
    assert "tuning needs at least 3 seeds" in capsys.readouterr().err
    write = tmp_path / "t.json"
    assert tune.main(["--stream", "toy", "--methods", "l2", "--grid", "l2.strength=0.1,5", "--epochs", "1",
                      "--out", str(tmp_path / "o"), "--write", str(write), "--worlds", "2", "--extend", "0"]) == 0
    files = sorted(p.name for p in (tmp_path / "o" / "toy" / "tuning" / "runs" / "l2").iterdir())
    assert files == [f"seed{s}-world{w}.json" for s in (1000, 1001, 1002) for w in (1000, 1001)]
    data = json.loads(write.read_text())
    assert data["seeds"] == [1000, 1001, 1002] and data["worlds"] == [1000, 1001] and "standard error" in data["rule"]
    entry = data["methods"]["l2"]
    assert entry["search_space"] == {"strength": [1.0, 0.1, 5.0]}      # the default first: what must be beaten
    assert all(len(c["per_seed"]) == 6 for c in entry["candidates"]) and "vs_default" in entry["candidates"][1]


def test_an_edge_optimum_is_extended_and_recorded_in_the_provenance(tmp_path, capsys):
    write = tmp_path / "t.json"
    # forgetting falls as the anchor stiffens: the stiffest strength tried wins, so its edge is extended
    assert tune.main(["--stream", "quick", "--methods", "l2", "--grid", "l2.strength=1,10", "--epochs", "2",
                      "--criterion", "forgetting_r10", "--extend", "1", "--out", str(tmp_path / "o"),
                      "--write", str(write)]) == 0
    entry = json.loads(write.read_text())["methods"]["l2"]
    assert entry["extended"] == [{"round": 1, "option": "strength", "edge": 10.0, "added": 100.0}]
    assert entry["search_space"]["strength"] == [1.0, 10.0, 100.0] and len(entry["candidates"]) == 3
    # 100 forgets more than 10 here: the optimum is inside the extended grid, and nothing is left at an edge
    assert entry["chosen"] == {"strength": 10.0} and entry["still_at_edge"] == []
    err = capsys.readouterr().err
    assert "at its grid's edge; trying 100.0" in err and "still at the edge" not in err


def test_reporting_the_runs_settings_were_tuned_on_is_warned(tmp_path, capsys):
    stream = tmp_path / "mytoy.toml"
    shutil.copy(builtin_streams()["toy"], stream)
    sha = streams.load(str(stream)).sha256
    common = ["--stream", str(stream), "--methods", "l2", "--epochs", "0", "--no-figures", "--out", str(tmp_path / "r")]
    for seeds, worlds, warned in (([0, 1], None, True), ([1000, 1001, 1002], [1000], False), ([0], [1000], False)):
        (tmp_path / "mytoy.tuned.json").write_text(json.dumps(
            {"schema": 1, "stream_sha256": sha, "seeds": seeds, **({"worlds": worlds} if worlds else {}),
             "methods": {"l2": {"chosen": {"strength": 0.1}}}}))
        capsys.readouterr()
        assert run.main(common + ["--seeds", "2"]) == 0
        err = capsys.readouterr().err
        assert ("tuned l2 on runs these runs report too (seed 0 world 0, seed 1 world 0)" in err) == warned, err

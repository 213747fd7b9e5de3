import pytest
import torch
from conftest import TWO_STEP

from bench import simulate, streams
from bench.errors import BenchError


def test_builtin_streams_load():
    spec = streams.load("sim-paper")
    assert len(spec.steps) == 11
    assert [s.pair for s in spec.steps][:3] == [("text", "video"), ("text", "audio"), ("vision", "depth")]
    assert len(spec.sources) == 7 and len(spec.modality_names) == 7
    assert sum("acc" in s.metrics for s in spec.steps) == 4
    assert sum("recall" in s.metrics for s in spec.steps) == 10
    assert len(streams.load("toy").steps) == 3


@pytest.mark.parametrize("old,new,message", [
    ('pair = ["text", "video"]', 'pair = ["text", "depth"]', "has no modality 'depth'"),
    ('source = "b"', 'source = "zzz"', "unknown source 'zzz'"),
    ("classes = 6\ntrain = 200", "classes = 6\ntrain = 200\ncolour = 1", "unknown key 'colour'"),
    ('metrics = ["recall"]', 'metrics = ["acc"]\n[sources.b.x]', "unknown key 'x'"),
    ('metrics = ["recall"]', 'metrics = ["map"]', "'metrics' must be a non-empty list"),
    ("train = 200\ntest = 64\n[sources.b]", "train = -1\ntest = 64\n[sources.b]",
     "key 'train' must be an integer in [1, 1000000], got -1"),
    ("[simulation]", "[simulation\n", "not valid TOML"),
    ("[simulation]", "[train]\nlr = 'fast'\n[simulation]", "'lr' must be a float"),
    ("[simulation]", "[train]\nlr = nan\n[simulation]", "[train]: key 'lr' must be a finite number >= 0, got nan"),
    ("[simulation]", "[train]\nbatch_size = 1\n[simulation]", "[train]: key 'batch_size' must be an integer >= 2"),
    ("dim = 24", 'dim = "32"', "[simulation]: key 'dim' must be an integer in [2, 16384], got '32'"),
    ("dim = 24", "dim = 1.5", "key 'dim' must be an integer"),
    ("dim = 24", "dim = -32", "key 'dim' must be an integer"),
    ("seed = 3", 'seed = "x"', "key 'seed' must be an integer"),
    ("specific_dim = 6", "specific_dim = 60", "common_dim + specific_dim (4 + 60) must not exceed dim (24)"),
    ("noise = 0.8", 'noise = "high"', "[modalities.text]: key 'noise' must be a finite number >= 0"),
    ("noise = 0.8", "noise = -5", "[modalities.text]: key 'noise' must be a finite number >= 0, got -5"),
    ("train = 200\ntest = 64\n[sources.b]", "train = 10000000000\ntest = 64\n[sources.b]",
     "key 'train' must be an integer in [1, 1000000]"),
])
def test_malformed_stream_files_name_the_problem(tmp_path, old, new, message):
    assert old in TWO_STEP
    p = tmp_path / "bad.toml"
    p.write_text(TWO_STEP.replace(old, new, 1))
    with pytest.raises(BenchError) as e:
        streams.load(str(p))
    assert message in str(e.value) and str(p) in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_stream_name():
    with pytest.raises(BenchError, match="unknown stream 'nope'.*sim-paper"):
        streams.load("nope")


def test_simulation_is_deterministic_and_well_formed(two_step):
    spec = streams.load(str(two_step))
    a, b = simulate.simulate(spec), simulate.simulate(spec)
    for src in spec.sources:
        for split in ("train", "test"):
            fa, fb = a[src][split], b[src][split]
            fa.validate(f"{src}/{split}")
            for m in fa.features:
                assert torch.equal(fa.features[m], fb.features[m])
                assert fa.features[m].dtype == torch.float32
                assert torch.allclose(fa.features[m].norm(dim=1), torch.ones(len(fa)), atol=1e-5)
            assert torch.equal(fa.labels, fb.labels)
    assert a["a"]["test"].class_texts.shape == (6, 24)


def test_changing_the_seed_changes_the_features(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(TWO_STEP.replace("seed = 3", "seed = 4"))
    q = tmp_path / "t.toml"
    q.write_text(TWO_STEP)
    fa = simulate.simulate(streams.load(str(p)))["a"]["train"].features["text"]
    fb = simulate.simulate(streams.load(str(q)))["a"]["train"].features["text"]
    assert not torch.allclose(fa, fb)


def test_acc_needs_class_texts(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(TWO_STEP.replace('modalities = ["text", "audio"]', 'modalities = ["text", "audio"]\nclass_texts = false')
                 .replace('metrics = ["recall"]', 'metrics = ["acc"]'))
    with pytest.raises(BenchError, match="metric 'acc' needs 'text' in the pair and class texts in source 'b'"):
        streams.load(str(p))


def test_probes_and_head_width(tmp_path):
    """[[probes]]: pairs evaluated at every row but never trained (emergent alignment); [heads] dim."""
    import json

    from bench import run
    text = TWO_STEP.replace('[sources.b]\nmodalities = ["text", "audio"]', '[sources.b]\nmodalities = ["text", "audio", "video"]')
    text += '\n[heads]\ndim = 16\n\n[[probes]]\nsource = "b"\npair = ["audio", "video"]\nmetrics = ["recall"]\n'
    p = tmp_path / "probe.toml"
    p.write_text(text)
    spec = streams.load(str(p))
    assert spec.head_dim == 16 and [q.name for q in spec.probes] == ["b:audio-video"]
    assert run.main(["--stream", str(p), "--methods", "vanilla", "--seeds", "1", "--epochs", "1",
                     "--out", str(tmp_path / "out"), "--no-figures"]) == 0
    r = json.loads((tmp_path / "out" / "two-step" / "runs" / "vanilla" / "seed0.json").read_text())
    assert [q["name"] for q in r["probes"]] == ["b:audio-video"]
    assert len(r["probe_matrices"]["r10"]) == 3 and len(r["probe_matrices"]["r10"][0]) == 1
    assert len(r["matrices"]["r10"][0]) == 2                        # the steps' matrices are unchanged
    assert "emergent_r10" in r["summary"] and "emergent_gain_r10" in r["summary"]
    assert "Emergent_R10" in (tmp_path / "out" / "two-step" / "table.md").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('pair = ["audio", "video"]', 'pair = ["audio", "depth"]'))
    with pytest.raises(BenchError, match=r"probes\[0\]: source 'b' has no modality 'depth'"):
        streams.load(str(bad))


def test_quick_stream_makes_vanilla_forget_and_separates_the_families(tmp_path):
    """What `quick` is shipped for: a new method's sanity check in seconds. Vanilla forgets clearly; a
    regulariser, replay and the null-space projection each keep most of it; distillation sits between."""
    import csv

    from bench import run
    assert run.main(["--stream", "quick", "--methods", "vanilla,ewc,er,dns,lwf", "--seeds", "1", "--jobs", "1",
                     "--no-figures", "--out", str(tmp_path)]) == 0
    bwt = {r["method"]: float(r["value"]) for r in csv.DictReader(open(tmp_path / "quick" / "summary.csv"))
           if r["metric"] == "bwt_r10"}
    assert bwt["vanilla"] < -10
    for m in ("ewc", "er", "dns"):
        assert bwt[m] > -3, (m, bwt)
    assert bwt["vanilla"] + 5 < bwt["lwf"] < bwt["er"] - 2

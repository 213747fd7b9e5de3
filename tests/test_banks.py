"""Feature banks: the official-cache importer, the paper stream on banks, validation errors, open_clip extraction."""
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch

from bench import run
from bench.features import bank
from bench.features.__main__ import main as features_main
from bench.features.official import OFFICIAL

DIM, N = {"train": 14, "test": 12}, None
WIDTH = 8


def write_official(root, encoder="tiny", seed=0):
    """Files in exactly the official layout: features_storage/ and dataset/<folder>/paired_data_{split}.json."""
    rng = np.random.default_rng(seed)
    feats, data = root / "features_storage", root / "dataset"
    feats.mkdir(parents=True)
    truth = {}
    for d, (mods, folder, has_classes) in OFFICIAL.items():
        names = [f"{d} class {c}" for c in range(3)]
        for split, n in DIM.items():
            ids = [f"{d}_{split}_{i:03d}" for i in range(n)]
            arr = rng.standard_normal((n, len(mods), WIDTH)).astype(np.float32)
            with h5py.File(feats / f"{d}_{split}_{encoder}.h5", "w") as f:
                for i, sid in enumerate(ids):
                    f.create_dataset(sid if i else f"tensor({sid})", data=arr[i])   # one id written as a torch scalar
            cls = [names[i % 3] for i in range(n)]
            (data / folder).mkdir(parents=True, exist_ok=True)
            (data / folder / f"paired_data_{split}.json").write_text(
                json.dumps([[{"id": sid, "data": {}, "name": c, "class": 0}] for sid, c in zip(ids, cls)]))
            truth[d, split] = (ids, arr, cls)
        if has_classes:
            texts = rng.standard_normal((3, WIDTH)).astype(np.float32)
            with h5py.File(feats / f"{d}_class_{encoder}.h5", "w") as f:
                for name, t in zip(names, texts):
                    f.create_dataset(name, data=t)
            truth[d, "class"] = (names, texts)
    return feats, data, truth


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    feats, data, truth = write_official(root)
    out = root / "banks"
    assert features_main(["import-official", "--features", str(feats), "--datasets", str(data), "--encoder", "tiny",
                          "--out", str(out)]) == 0
    return out, truth


def test_import_round_trips_features_ids_classes_and_columns(banks):
    out, truth = banks
    for d, (mods, _, has_classes) in OFFICIAL.items():
        for split in ("train", "test"):
            b = bank.read_split(bank.bank_file(out, "tiny", d, split))
            ids, arr, cls = truth[d, split]
            # rows follow the official order (sorted cache keys, "tensor(...)" included); ids are cleaned
            assert sorted(b.ids) == sorted(ids)
            order = [ids.index(s) for s in b.ids]
            arr, cls = arr[order], [cls[i] for i in order]
            assert set(b.features) == set(mods)
            for i, m in enumerate(mods):                           # each modality's own column
                assert torch.equal(b.features[m], torch.from_numpy(arr[:, i, :])), (d, m)
            if has_classes:
                names, texts = truth[d, "class"]
                assert b.class_names == sorted(names)
                assert [b.class_names[k] for k in b.labels.tolist()] == cls
                assert torch.equal(b.class_texts, torch.from_numpy(texts[np.argsort(names)]))
            else:
                assert b.labels is None and b.class_texts is None
    vgg = bank.read_split(bank.bank_file(out, "tiny", "vggsound_s", "train"))
    ids, arr, _ = truth["vggsound_s", "train"]
    row = vgg.ids.index(ids[0])
    assert torch.equal(vgg.features["video"][row], torch.from_numpy(arr[0, 2, :]))     # video is column 2


MEMORY_PROBE = """
import sys, torch
from bench.features import bank
def rss_anon_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024
n, d = 40_000, 512
path = sys.argv[1]
if sys.argv[2] == "write":
    g = torch.Generator().manual_seed(0)
    data = bank.SplitFeatures(features={"text": torch.randn(n, d, generator=g), "audio": torch.randn(n, d, generator=g)},
                              ids=[str(i) for i in range(n)])
    bank.write_split(path, data, source="big", split="train", encoder="x")
    torch.save(data.features["audio"][12345].clone(), path + ".row")
    small = bank.SplitFeatures(features={"text": torch.randn(8, d, generator=g)}, ids=[str(i) for i in range(8)])
    bank.write_split(path + ".small", small, source="small", split="train", encoder="x")
else:
    expected = torch.load(path + ".row")
    bank.read_split(path + ".small")          # warm-up: h5py's import and first-use allocations
    before = rss_anon_mb()
    loaded = bank.read_split(path)
    grown = rss_anon_mb() - before
    assert torch.equal(loaded.features["audio"][12345], expected)
    # structural: each matrix's data lies in a mapping of the bank file itself (not a private copy)
    maps = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == path:
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                maps.append((lo, hi))
    for m, x in loaded.features.items():
        ptr, size = x.data_ptr(), x.numel() * x.element_size()
        assert any(lo <= ptr and ptr + size <= hi for lo, hi in maps), f"{m} is not mapped from the file"
    print(grown)
"""


def test_banks_are_memory_mapped_not_copied(tmp_path):
    """A 40k × 512 bank (2 × 80 MB) is validated (every value read) without copying either matrix: both live
    in mappings of the file, and the reader's anonymous memory grows far less than 160 MB. Written in one
    fresh interpreter and read in another (after a warm-up read): memory freed by the writer, by other tests
    or by first-use imports is not always returned to the system, which makes a shared process a noisy
    baseline."""
    import subprocess
    import sys
    path = str(tmp_path / "big.h5")
    for mode in ("write", "read"):
        r = subprocess.run([sys.executable, "-c", MEMORY_PROBE, path, mode], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
    grown_mb = float(r.stdout.strip().splitlines()[-1])
    assert grown_mb < 40, f"loading 160 MB of features allocated {grown_mb:.0f} MB"


def test_paper_stream_runs_end_to_end_on_banks(banks, tmp_path, capsys):
    out, _ = banks
    res = tmp_path / "res"
    assert run.main(["--stream", "paper", "--encoder", "tiny", "--banks", str(out), "--methods", "vanilla,dns",
                     "--seeds", "1", "--epochs", "1", "--out", str(res), "--no-figures"]) == 0
    table = (res / "paper-tiny" / "table.md").read_text()
    for col in ("Acc", "BWT_A", "R@1", "R@5", "R@10", "BWT_R10"):
        assert f"| {col} |" in table
    r = json.loads((res / "paper-tiny" / "runs" / "dns" / "seed0.json").read_text())
    assert len(r["tasks"]) == 11 and r["config"]["encoder"] == "tiny"
    assert set(r["config"]["banks_sha256"]) == {f"{d}/{s}" for d in OFFICIAL for s in ("train", "test")}
    assert r["matrices"]["acc"][0][0] is not None and r["matrices"]["r10"][0][0] is None
    # which banks the run read, made how: the configuration's hashes and each file's provenance agree
    assert {k: v["sha256"] for k, v in r["banks"].items()} == r["config"]["banks_sha256"]
    assert all(v["format_version"] >= 1 for v in r["banks"].values())
    report = (res / "paper-tiny" / "report.md").read_text()
    assert "## Feature banks" in report and r["banks"]["ucf101/test"]["sha256"][:16] in report
    capsys.readouterr()
    assert run.main(["--stream", "paper", "--encoder", "tiny", "--banks", str(out), "--methods", "vanilla",
                     "--seeds", "1", "--epochs", "1", "--out", str(res), "--no-figures"]) == 0
    assert "0 runs to do, 1 already done" in capsys.readouterr().err


def _corrupt(path, how):
    if how == "truncate":
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size // 2)
        return
    with h5py.File(path, "r+") as f:
        if how == "rank":
            x = f["features/audio"][...]
            del f["features/audio"]
            f.create_dataset("features/audio", data=x[:, :, None])
        elif how == "nan":
            f["features/audio"][3, 2] = np.nan
        elif how == "rows":
            x = f["features/audio"][...]
            del f["features/audio"]
            f.create_dataset("features/audio", data=x[:-1])
        elif how == "modality":
            del f["features/audio"]
        elif how == "ids":
            ids = f["ids"].asstr()[...]
            ids[1] = ids[0]
            del f["ids"]
            f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        elif how == "width":          # as a bank written whole with the wrong width (no stale hash)
            x = f["features/audio"][...]
            del f["features/audio"]
            f.create_dataset("features/audio", data=np.concatenate([x, x], 1))
            del f.attrs["content_sha256"]
        elif how == "edited":
            f["features/audio"][3, 2] += 1.0
        elif how == "features-dataset":
            del f["features"]
            f.create_dataset("features", data=np.zeros((14, 4), dtype=np.float32))
        elif how == "int-ids":
            n = len(f["ids"])
            del f["ids"]
            f.create_dataset("ids", data=np.arange(n))


@pytest.mark.parametrize("how,message", [
    ("rank", "key 'features/audio' must be a 2-D matrix"),
    ("nan", "key 'features/audio' contains NaN or Inf"),
    ("rows", "modality 'audio' has 13 rows but there are 14 sample ids"),
    ("modality", "missing modality 'audio' (key 'features/audio'"),
    ("ids", "duplicate sample ids"),
    ("int-ids", "key 'ids' must hold strings (sample ids)"),
    ("truncate", "unreadable or truncated"),
    ("width", "key 'features/audio' has width 8 but the train split has 16"),
    ("missing", "missing 1 of 14 bank files"),
    ("edited", "its arrays do not match its content_sha256 attribute"),
    ("features-dataset", "key 'features' must be a group of one matrix per modality, got a dataset"),
])
def test_bad_banks_fail_with_one_line_naming_file_and_key(banks, tmp_path, capsys, how, message):
    out, _ = banks
    copy = tmp_path / "banks"
    shutil.copytree(out, copy)
    split = "test" if how == "width" else "train"
    target = bank.bank_file(copy, "tiny", "esc50", split)
    if how == "missing":
        target.unlink()
    else:
        _corrupt(target, how)
    if how == "width":
        _corrupt(bank.bank_file(copy, "tiny", "esc50", "train"), "width")   # train 16 wide ...
        with h5py.File(target, "r+") as f:                                   # ... test back to 8
            x = f["features/audio"][...][:, :8]
            del f["features/audio"]
            f.create_dataset("features/audio", data=np.ascontiguousarray(x))
    res = tmp_path / "res"
    assert run.main(["--stream", "paper", "--encoder", "tiny", "--banks", str(copy), "--methods", "vanilla",
                     "--seeds", "1", "--out", str(res)]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    if how != "missing":
        assert "esc50" in lines[0] and ".h5" in lines[0]
    assert not res.exists()


def test_width_must_match_the_streams_encoder_table(banks, tmp_path, capsys):
    out, _ = banks
    copy = tmp_path / "banks"
    shutil.copytree(out / "tiny", copy / "imagebind")
    assert run.main(["--stream", "paper", "--encoder", "imagebind", "--banks", str(copy), "--methods", "vanilla",
                     "--seeds", "1", "--out", str(tmp_path / "res")]) == 2
    assert "expects 1024 for encoder 'imagebind'" in capsys.readouterr().err


def test_import_reports_missing_inputs_and_writes_nothing(tmp_path, capsys):
    feats, data, _ = write_official(tmp_path)
    (feats / "llvip_test_tiny.h5").unlink()
    out = tmp_path / "banks"
    assert features_main(["import-official", "--features", str(feats), "--datasets", str(data), "--encoder", "tiny",
                          "--out", str(out)]) == 2
    assert "llvip_test_tiny.h5" in capsys.readouterr().err and not out.exists()
    (data / "esc50" / "paired_data_test.json").write_text("{not json")
    assert features_main(["import-official", "--features", str(feats), "--datasets", str(data), "--encoder", "tiny",
                          "--out", str(out), "--only", "esc50"]) == 2
    assert "paired_data_test.json" in capsys.readouterr().err and not out.exists()


@pytest.fixture
def image_folder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "red_car"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(7):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    return tmp_path / "imgs"


def _extract(folder, out, *extra):
    cfg = os.path.join(os.path.dirname(__file__), "data", "tiny-clip.json")
    return features_main(["extract", "--encoder", "open_clip:tiny-clip", "--model-config", cfg, "--images", str(folder),
                          "--source", "pets", "--out", str(out), "--batch-size", "8", *extra])


def test_open_clip_extraction_offline_resumes_without_recomputing(image_folder, tmp_path, capsys):
    out = tmp_path / "banks"
    assert _extract(image_folder, out, "--max-batches", "1") == 0
    pets = out / "open_clip-tiny-clip" / "pets"
    assert not (pets / "train.h5").exists()                       # nothing final until every batch is done
    first = next(pets.glob(".*.partial-*/batch_00000.pt"))
    stamp = first.stat().st_mtime_ns
    capsys.readouterr()
    assert _extract(image_folder, out) == 0
    assert "resuming: 1 of 3 batches already encoded" in capsys.readouterr().err
    assert not first.exists() and not list(pets.glob(".*partial*"))   # cleaned up after assembling
    train, test = bank.read_split(pets / "train.h5"), bank.read_split(pets / "test.h5")
    assert len(train) + len(test) == 21 and set(train.ids).isdisjoint(test.ids)
    assert train.features["vision"].shape[1] == train.features["text"].shape[1] == 16
    assert train.class_names == ["cat", "dog", "red_car"] and train.class_texts.shape == (3, 16)
    assert torch.allclose(train.features["vision"].norm(dim=1), torch.ones(len(train)), atol=1e-5)
    # the resumed bank equals one made in a single pass (same towers, same features)
    assert _extract(image_folder, tmp_path / "again") == 0
    again = bank.read_split(tmp_path / "again" / "open_clip-tiny-clip" / "pets" / "train.h5")
    assert torch.equal(again.features["vision"], train.features["vision"])
    assert torch.equal(again.features["text"], train.features["text"])
    assert stamp > 0


def test_open_clip_pretrained_tag_without_weights_is_a_clear_error(image_folder, tmp_path, capsys):
    assert features_main(["extract", "--encoder", "open_clip:ViT-B-32:no_such_tag", "--images", str(image_folder),
                          "--source", "pets", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "could not load open_clip ViT-B-32" in err and "--checkpoint" in err
    assert not list((tmp_path / "b").rglob("*.h5"))


def test_probe_modalities_of_bank_sources_are_loaded(banks, tmp_path):
    """A probe may use a modality that no step of its source trains (here: video of vggsound_s)."""
    out, _ = banks
    stream = tmp_path / "probe.toml"
    stream.write_text('name = "probe"\n[sources.vggsound_s]\nkind = "bank"\nmodalities = ["text", "audio", "video"]\n'
                      '[[steps]]\nsource = "vggsound_s"\npair = ["text", "audio"]\n'
                      '[[probes]]\nsource = "vggsound_s"\npair = ["audio", "video"]\n')
    assert run.main(["--stream", str(stream), "--encoder", "tiny", "--banks", str(out), "--methods", "vanilla",
                     "--seeds", "1", "--epochs", "1", "--out", str(tmp_path / "res"), "--no-figures"]) == 0
    r = json.loads((tmp_path / "res" / "probe-tiny" / "runs" / "vanilla" / "seed0.json").read_text())
    assert r["probes"][0]["modalities"] == ["audio", "video"]


def test_every_method_runs_with_towers_of_different_widths(tmp_path):
    """Non-square heads: text 12-d, audio 6-d, video 9-d into an 8-d joint space (as in real-offline)."""
    import methods
    g = torch.Generator().manual_seed(0)
    widths = {"text": 12, "audio": 6, "video": 9}
    sources = {"s1": ("text", "audio", "video"), "s2": ("audio", "text")}
    for s, mods in sources.items():
        for split, n in (("train", 96), ("test", 24)):
            data = bank.SplitFeatures(features={m: torch.randn(n, widths[m], generator=g) for m in mods},
                                      ids=[f"{s}{split}{i}" for i in range(n)],
                                      labels=torch.arange(n) % 3, class_texts=torch.randn(3, 12, generator=g))
            bank.write_split(bank.bank_file(tmp_path / "banks", "mixed", s, split), data, source=s, split=split,
                             encoder="mixed")
    stream = tmp_path / "mixed.toml"
    stream.write_text('name = "mixed"\n[heads]\ndim = 8\n'
                      '[sources.s1]\nkind = "bank"\nmodalities = ["text", "audio", "video"]\n'
                      '[sources.s2]\nkind = "bank"\nmodalities = ["audio", "text"]\n'
                      '[[steps]]\nsource = "s1"\npair = ["text", "video"]\nmetrics = ["acc", "recall"]\n'
                      '[[steps]]\nsource = "s2"\npair = ["audio", "text"]\n'
                      '[[steps]]\nsource = "s1"\npair = ["audio", "video"]\n')
    assert run.main(["--stream", str(stream), "--encoder", "mixed", "--banks", str(tmp_path / "banks"),
                     "--methods", "all", "--seeds", "1", "--epochs", "1", "--batch-size", "16",
                     "--out", str(tmp_path / "res"), "--no-figures"]) == 0
    done = {p.parent.name for p in (tmp_path / "res" / "mixed-mixed" / "runs").glob("*/seed0.json")}
    assert done == set(methods.names())

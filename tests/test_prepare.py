"""``python -m bench.prepare real-offline``: real data encoded by packaged towers, offline.

The end-to-end tests run the whole preparation on a tiny subset (``--limit``) and need the optional
dependencies (the pip line in ``bench.features.towers.PIP_LINE``) and the Debian data packages (installed, or unpacked
in the default cache by an earlier ``python -m bench.prepare real-offline``); without them they are skipped.
The error paths run everywhere.
"""
import importlib.util
import io
import json
import tarfile

import pytest
import torch

from bench import run
from bench.errors import BenchError
from bench.features import bank, debian, towers
from bench.features import real_offline as prepare

LIMIT = 24
WIDTH = {"vision": 1280, "text": 384, "audio": 256}


def _fake_deb(path, files: dict[str, bytes]):
    """A minimal .deb: an ar archive with debian-binary, control.tar.gz and data.tar.xz."""
    def tar(members, mode):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as t:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    members = [("debian-binary", b"2.0\n"), ("control.tar.gz", tar({"./control": b"Package: x\n"}, "w:gz")),
               ("data.tar.xz", tar({f"./{k}": v for k, v in files.items()}, "w:xz"))]
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        if len(data) % 2:
            out += b"\n"
    path.write_bytes(bytes(out))


def test_missing_package_is_one_line_error_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(debian, "SYSTEM_ROOT", tmp_path / "root")       # nothing installed
    monkeypatch.setattr(prepare, "check_python_deps", lambda recipe: None)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))                       # no apt-get, no dpkg
    out = tmp_path / "out"
    assert prepare.main(["real-offline", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: Debian package dataset-fashion-mnist is needed and apt-get is not available")
    assert "apt-get install dataset-fashion-mnist" in err[0] and str(tmp_path / "cache" / "debs") in err[0]
    assert not out.exists()


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert prepare.main(["real-offline", "--limit", "5", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: --limit must be at least 20 (each source holds out 10 test pairs)"
    assert prepare.main(["real-offline", "--sources", "fashion,nope", "--out", str(tmp_path)]) == 2
    assert "unknown source 'nope'" in capsys.readouterr().err


def test_missing_python_dependencies_name_the_pip_line(monkeypatch):
    """Only what is missing is named, whatever is installed here (with or without the [real] extra)."""
    present = object()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "resemblyzer" else present)
    with pytest.raises(BenchError, match=r"^missing Python packages for real-offline: resemblyzer; "
                                                 r"install them with `pip install .*--no-deps resemblyzer`$"):
        towers.check_python_deps(prepare.RECIPE)


def test_every_missing_python_dependency_is_named(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(towers.shutil, "which", lambda name: None)
    with pytest.raises(BenchError) as e:
        towers.check_python_deps(prepare.RECIPE)
    named = str(e.value).split(": ", 1)[1].split("; install", 1)[0]
    assert named.split(", ") == list(towers.PY_DEPS.values()) + ["cairosvg (or Debian's librsvg2-bin)"]


def test_a_deb_put_in_the_cache_is_unpacked_without_dpkg(tmp_path, monkeypatch):
    """The documented manual route: a .deb in <cache>/debs/ is used as it is; without dpkg it is unpacked in
    Python; the unpacked tree appears atomically (no leftover temporary folder)."""
    monkeypatch.setattr(debian, "SYSTEM_ROOT", tmp_path / "root")
    monkeypatch.setattr(debian, "PACKAGES", {"fake-data": "usr/share/fake/data.txt"})
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    _fake_deb(cache / "debs" / "fake-data_1.0-1_all.deb", {"usr/share/fake/data.txt": b"hello\n"})
    root = debian.locate("fake-data", cache)
    assert root == cache / "pkgs" / "fake-data" and (root / "usr/share/fake/data.txt").read_text() == "hello\n"
    assert sorted(p.name for p in (cache / "pkgs").iterdir()) == ["fake-data"]
    assert debian.missing_packages(cache) == []
    # a .deb that lacks the expected file is an error, and leaves nothing behind
    monkeypatch.setattr(debian, "PACKAGES", {"other-data": "usr/share/other/x"})
    _fake_deb(cache / "debs" / "other-data_1_all.deb", {"usr/share/wrong/x": b""})
    with pytest.raises(BenchError, match="does not contain usr/share/other/x"):
        debian.locate("other-data", cache)
    assert sorted(p.name for p in (cache / "pkgs").iterdir()) == ["fake-data"]


# ----------------------------------------------------------------------------- end to end (optional deps)
def _require_real_data(cache):
    try:
        towers.check_python_deps(prepare.RECIPE)
    except BenchError as e:
        pytest.skip(f"optional dependencies: {e}")
    default = debian.default_cache(prepare.RECIPE)
    for pkg in debian.PACKAGES:
        if debian.find_local(pkg, cache) is None and debian.find_local(pkg, default) is not None:
            (cache / "pkgs").mkdir(parents=True, exist_ok=True)
            (cache / "pkgs" / pkg).symlink_to(default / "pkgs" / pkg)      # unpacked by an earlier preparation
    missing = debian.missing_packages(cache)
    if missing:
        pytest.skip(f"Debian data packages not installed: apt-get install {' '.join(missing)}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    cache = root / "cache"
    cache.mkdir()
    _require_real_data(cache)
    out = root / "features"
    assert prepare.main(["real-offline", "--cache", str(cache), "--out", str(out), "--limit", str(LIMIT)]) == 0
    return root, cache, out


def _read(out):
    return {(s, split): bank.read_split(bank.bank_file(out, "real-offline", s, split))
            for s in prepare.SOURCES for split in ("train", "test")}


def test_tiny_banks_have_the_stream_shapes(tiny):
    _, _, out = tiny
    banks = _read(out)
    for s, spec in prepare.SOURCES.items():
        train, test = banks[s, "train"], banks[s, "test"]
        assert len(test) >= 10 and len(train) >= 10 and len(train) + len(test) <= LIMIT, s
        assert not set(train.ids) & set(test.ids), s                   # held out
        for split in (train, test):
            assert sorted(split.features) == sorted(spec.modalities)
            for m, x in split.features.items():
                assert x.shape == (len(split), WIDTH[m]) and x.dtype == torch.float32
                assert torch.allclose(x.norm(dim=1), torch.ones(len(x)), atol=1e-4)   # L2-normalised
            if s in ("fashion", "digits"):
                assert split.class_texts.shape == (10, 384) and split.labels.min() >= 0 and split.labels.max() < 10
            else:
                assert split.labels is None and split.class_texts is None
    with __import__("h5py").File(bank.bank_file(out, "real-offline", "speech", "test"), "r") as f:
        meta = json.loads(f.attrs["meta"])
        assert f.attrs["encoder"] == "real-offline" and "CC BY-SA" in meta["licence"] and meta["limit"] == LIMIT
    # the spoken digits are all different takes of the ten recordings
    digits = banks["digits", "train"]
    assert len({tuple(r.tolist()) for r in digits.features["audio"]}) == len(digits)


def test_towers_are_deterministic_and_a_rerun_skips_finished_sources(tiny, capsys):
    root, cache, out = tiny
    first = _read(out)
    again = root / "again"
    assert prepare.main(["real-offline", "--cache", str(cache), "--out", str(again), "--limit", str(LIMIT),
                         "--force"]) == 0                              # decode and encode everything again
    second = _read(again)
    for key, a in first.items():
        b = second[key]
        assert a.ids == b.ids, key
        for m in a.features:
            assert torch.equal(a.features[m], b.features[m]), (key, m)
    capsys.readouterr()
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.h5")}
    assert prepare.main(["real-offline", "--cache", str(cache), "--out", str(out), "--limit", str(LIMIT)]) == 0
    assert capsys.readouterr().err.count("up to date") == len(prepare.SOURCES)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.h5")} == stamp


def test_batched_audio_equals_resemblyzer_embed_utterance(tiny):
    import numpy as np
    towers = prepare.Towers()
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 40000)]    # one and several partials
    batched = towers.audio(wavs)
    single = torch.stack([torch.from_numpy(towers.audio_model().embed_utterance(w)) for w in wavs])
    assert torch.allclose(batched, single, atol=1e-5)


def test_the_stream_runs_on_the_tiny_banks(tiny):
    root, _, out = tiny
    res = root / "results"
    assert run.main(["--stream", "real-offline", "--encoder", "real-offline", "--banks", str(out),
                     "--methods", "vanilla,dns,joint", "--seeds", "1", "--epochs", "1", "--out", str(res),
                     "--no-figures"]) == 0
    r = json.loads((res / "real-offline-real-offline" / "runs" / "vanilla" / "seed0.json").read_text())
    assert len(r["tasks"]) >= 5 and {m for t in r["tasks"] for m in t["modalities"]} == {"vision", "text", "audio"}
    assert r["probes"] and len(r["probe_matrices"]["r10"]) == len(r["tasks"]) + 1


def test_the_stream_file_matches_the_prepared_sources():
    from bench import streams
    spec = streams.load("real-offline")
    assert len(spec.steps) >= 5 and set(spec.modality_names) == {"vision", "text", "audio"}
    for name, src in spec.sources.items():
        assert src["kind"] == "bank" and tuple(src["modalities"]) == prepare.SOURCES[name].modalities
        assert src.get("class_texts", True) == (name in ("fashion", "digits"))
    assert spec.head_dim not in WIDTH.values()          # every head is non-square: none starts at the identity
    trained = {(s.source, frozenset(s.pair)) for s in spec.steps}
    assert spec.probes and all((p.source, frozenset(p.pair)) not in trained for p in spec.probes)
    for p in spec.probes:   # a probe's modalities are all loaded for its source (steps of that source use them)
        assert set(p.pair) <= {m for s in spec.steps if s.source == p.source for m in s.pair}


class _Payload:
    def __reduce__(self):
        return (open, (str(_Payload.marker), "w"))


def test_the_encoded_cache_holds_data_only_and_a_pickle_there_never_runs(tmp_path):
    """The cache was read with torch.load(weights_only=False): whoever could write it could run code."""
    data = {"class_names": ["a", "b"], "meta": {"k": 1}, "class_texts": torch.randn(2, 4)}
    for split, n in (("train", 5), ("test", 3)):
        data[split] = {"features": {"vision": torch.randn(n, 4), "text": torch.randn(n, 4)},
                       "ids": [f"{split}{i}" for i in range(n)], "texts": ["t"] * n,
                       "labels": torch.arange(n) % 2 if split == "train" else None}
    path = tmp_path / "c.npz"
    prepare.save_encoded(path, data)
    back = prepare.load_encoded(path)
    assert back["class_names"] == ["a", "b"] and back["meta"] == {"k": 1}
    assert torch.equal(back["class_texts"], data["class_texts"]) and back["test"]["labels"] is None
    for split in ("train", "test"):
        assert back[split]["ids"] == data[split]["ids"]
        for m in ("vision", "text"):
            assert torch.equal(back[split]["features"][m], data[split]["features"][m])
    _Payload.marker = tmp_path / "ran"
    torch.save({"x": _Payload()}, path)           # a hostile cache file
    with pytest.raises((KeyError, ValueError)):      # not a cache: redone by prepare_source, never unpickled
        prepare.load_encoded(path)
    assert not _Payload.marker.exists()

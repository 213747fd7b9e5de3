"""Import the official CMCL code's feature cache (github.com/Xiaohao-Liu/CMCL) into feature banks.

The official cache (``features_storage/``) holds, per dataset and split, ``{dataset}_{split}_{encoder}.h5``
with one HDF5 dataset per sample id, an array [n_modalities, dim] in the dataset's modality order, and
``{dataset}_class_{encoder}.h5`` with one text feature per class name. A sample's class name comes from the
raw dataset's ``paired_data_{split}.json`` (a list of one-element lists ``[{"id", "data", "name", "class"}]``);
class indices follow the sorted union of the train and test class names, as in the official code.

Columns are picked by modality name, so every pair reads its own features — the official code's
covariance update, which reads the first two columns of 3-modality datasets, is not reproduced here
(``dns-official`` reproduces it as an option, on our banks).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import BenchError
from .bank import SPLITS, SplitFeatures, bank_file, write_split

# dataset -> (modalities in the official column order, folder under --datasets, zero-shot classes)
OFFICIAL = {
    "ucf101": (("text", "video"), "ucf101", True),
    "esc50": (("text", "audio"), "esc50", True),
    "nyudv2": (("vision", "text", "depth"), "nyu-d-2/raw_data", True),
    "clotho": (("text", "audio"), "clotho", False),
    "vggsound_s": (("text", "audio", "video"), "vggsound/scratch/shared/beegfs/hchen/train_data/VGGSound_final", True),
    "tvl": (("vision", "text", "tactile"), "tvl/tvl_dataset", False),
    "llvip": (("vision", "thermal"), "llvip", False),
}


def _clean_id(key: str) -> str:
    # some official caches were written with torch scalars as ids: "tensor(123)"
    return key[7:-1] if key.startswith("tensor(") and key.endswith(")") else key


def _read_samples(path: Path, n_mod: int):
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise BenchError(f"official cache {path}: unreadable or truncated HDF5 file ({str(e).splitlines()[0]})") from None
    with f:
        keys = sorted(f.keys())
        if not keys:
            raise BenchError(f"official cache {path}: no samples")
        first = f[keys[0]]
        if first.ndim != 2 or first.shape[0] != n_mod:
            raise BenchError(f"official cache {path}: key {keys[0]!r} has shape {first.shape}, expected "
                             f"[{n_mod}, dim] ({n_mod} modalities)")
        out = np.empty((len(keys), n_mod, first.shape[1]), dtype=np.float32)
        for i, k in enumerate(keys):
            ds = f[k]
            if ds.shape != first.shape:
                raise BenchError(f"official cache {path}: key {k!r} has shape {ds.shape}, expected {first.shape}")
            ds.read_direct(out, dest_sel=np.s_[i]) if ds.dtype == np.float32 else out.__setitem__(i, ds[...])
    return [_clean_id(k) for k in keys], out


def _class_names(datasets: Path, dataset: str, folder: str) -> tuple[dict[str, str], list[str]]:
    id_to_name, names = {}, set()
    for split in SPLITS:
        path = datasets / folder / f"paired_data_{split}.json"
        if not path.is_file():
            alt = datasets / dataset / f"paired_data_{split}.json"
            if not alt.is_file():
                raise BenchError(f"class names for {dataset!r}: {path} not found (nor {alt})")
            path = alt
        try:
            rows = json.loads(path.read_text())
            for row in rows:
                entry = row[0] if isinstance(row, list) else row
                id_to_name[str(entry["id"])] = entry["name"]
                names.add(entry["name"])
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            raise BenchError(f"class names {path}: not a list of [{{'id', 'name', ...}}] entries "
                             f"({e.__class__.__name__})") from None
    return id_to_name, sorted(names)


def _lookup(sample_id: str, id_to_name: dict[str, str]) -> str | None:
    if sample_id in id_to_name:
        return id_to_name[sample_id]
    parts = sample_id.split("__")   # the official code also matches ids by their "__"-separated prefixes
    for i in range(1, min(5, len(parts))):
        cand = "__".join(parts[:i]) + ("_" if parts[i].startswith("_") else "")
        if cand in id_to_name:
            return id_to_name[cand]
    return None


def read_dataset(features: Path, datasets: Path, encoder: str, dataset: str) -> list[tuple[str, SplitFeatures, dict]]:
    """One dataset's splits, converted in memory: [(split, data, meta)]."""
    modalities, folder, has_classes = OFFICIAL[dataset]
    classes = _class_names(datasets, dataset, folder) if has_classes else None
    texts = None
    if classes is not None:
        import h5py
        cpath = features / f"{dataset}_class_{encoder}.h5"
        if not cpath.is_file():
            raise BenchError(f"official cache {cpath}: file not found (class-name text features of {dataset!r})")
        with h5py.File(cpath, "r") as f:
            missing = [n for n in classes[1] if n not in f]
            if missing:
                raise BenchError(f"official cache {cpath}: no text feature for class {missing[0]!r}")
            texts = torch.from_numpy(np.stack([np.asarray(f[n][...], dtype=np.float32).reshape(-1) for n in classes[1]]))
    out = []
    for split in SPLITS:
        path = features / f"{dataset}_{split}_{encoder}.h5"
        if not path.is_file():
            raise BenchError(f"official cache {path}: file not found")
        ids, arr = _read_samples(path, len(modalities))
        labels = None
        if classes is not None:
            index = {n: i for i, n in enumerate(classes[1])}
            lab = []
            for sid in ids:
                name = _lookup(sid, classes[0])
                if name is None:
                    raise BenchError(f"official cache {path}: sample {sid!r} has no entry in paired_data_{split}.json")
                lab.append(index[name])
            labels = torch.tensor(lab, dtype=torch.int64)
        feats = {m: torch.from_numpy(np.ascontiguousarray(arr[:, i, :])) for i, m in enumerate(modalities)}
        data = SplitFeatures(features=feats, ids=ids, labels=labels, class_texts=texts,
                             class_names=classes[1] if classes else None)
        data.validate(f"official cache {path}")
        out.append((split, data, {"imported_from": path.name, "official_modalities": list(modalities)}))
    return out


def import_official(features: Path, datasets: Path, encoder: str, out: Path, only: list[str] | None = None,
                    log=print) -> list[Path]:
    """Convert every dataset of the paper (or ``only`` these) into ``out/<encoder>/<dataset>/<split>.h5``.
    Everything is read and checked before the first bank is written; each bank is written atomically."""
    names = only or list(OFFICIAL)
    unknown = [n for n in names if n not in OFFICIAL]
    if unknown:
        raise BenchError(f"unknown dataset {unknown[0]!r}; the official code's datasets: {', '.join(OFFICIAL)}")
    need = [features / f"{d}_{s}_{encoder}.h5" for d in names for s in SPLITS]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise BenchError(f"official cache: missing {len(missing)} file(s): {', '.join(missing[:4])}"
                         f"{', …' if len(missing) > 4 else ''} (use --only to import some datasets)")
    converted = {}
    for d in names:
        converted[d] = read_dataset(features, datasets, encoder, d)
        log(f"read {d}: " + ", ".join(f"{s} {len(x)} pairs" for s, x, _ in converted[d]))
    written = []
    for d, splits in converted.items():
        for split, data, meta in splits:
            written.append(write_split(bank_file(out, encoder, d, split), data, source=d, split=split,
                                       encoder=encoder, meta=meta))
    log(f"wrote {len(written)} bank files under {out / encoder}/")
    return written

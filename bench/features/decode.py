"""Decoders of the real-offline recipe's raw data: WAV audio, IDX images, transcripts, SVG drawings.
"""
from __future__ import annotations

import gzip
import html
import io
import re
import shutil
import subprocess
import warnings
import wave
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BenchError

SAMPLE_RATE = 16_000        # the voice encoder's


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
    recs: list[dict[str, Any]] = []
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
    bilinear = Image.BILINEAR  # type: ignore[attr-defined]  # (Pillow < 9.1 has no Image.Resampling)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), bilinear)
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    arr = np.asarray(canvas)
    return arr if arr.std() > 2 else None

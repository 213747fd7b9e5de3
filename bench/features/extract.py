"""Encode an image–text source with an open_clip model into a feature bank (``python -m bench.features extract``).

Sources: an image folder with one sub-folder per class (caption and class text: ``--template`` filled with
the class name), or a CSV with columns ``image`` (path relative to the CSV) and ``caption`` (optional
``label``). Samples are split into train/test by a hash of their path (stable when files are added).
Encoding is batched and resumable: every finished batch is saved under ``<bank>.partial/``; a rerun of the
same command skips them, and the bank files appear (atomically) only when every batch is done.

Models: ``open_clip:MODEL[:PRETRAINED]``. Pretrained weights are used where the user has them (open_clip's
hub cache, or ``--checkpoint PATH``); nothing is downloaded when ``HF_HUB_OFFLINE=1``. ``--model-config``
registers a custom model config (JSON) first, e.g. a tiny randomly initialised model for tests.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import BenchError
from ..files import atomic_path, check_name, check_writable
from .bank import SplitFeatures, bank_file, write_split

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def add_arguments(p):
    p.add_argument("--encoder", required=True, help="open_clip:MODEL[:PRETRAINED], e.g. open_clip:ViT-B-32:laion2b_s34b_b79k")
    p.add_argument("--source", required=True, help="source name of the bank (the stream's source key)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="image folder with one sub-folder per class")
    src.add_argument("--csv", help="CSV with columns image, caption[, label]")
    p.add_argument("--out", default="features", help="banks folder (default: features/)")
    p.add_argument("--bank", help="bank (encoder) name under --out (default: derived from --encoder)")
    p.add_argument("--checkpoint", help="load model weights from this file instead of a pretrained tag")
    p.add_argument("--model-config", help="JSON model config to register with open_clip before loading MODEL")
    p.add_argument("--template", default="a photo of a {}.", help="caption / class text for class folders")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of samples in the test split (default 0.2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-normalize", action="store_true", help="store raw embeddings (default: L2-normalised)")
    p.add_argument("--seed", type=int, default=0, help="seeds a randomly initialised model (no pretrained weights)")
    p.add_argument("--max-batches", type=int, help="stop after this many new batches (rerun to continue)")


@dataclass
class Sample:
    id: str
    image: Path
    caption: str
    label: int | None


def parse_encoder(text: str) -> tuple[str, str | None]:
    parts = text.split(":")
    if parts[0] != "open_clip" or len(parts) not in (2, 3) or not parts[1]:
        raise BenchError(f"--encoder must be open_clip:MODEL[:PRETRAINED], got {text!r}")
    return parts[1], (parts[2] if len(parts) == 3 and parts[2] else None)


def list_folder(root: Path, template: str) -> tuple[list[Sample], list[str]]:
    if not root.is_dir():
        raise BenchError(f"--images {root}: not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise BenchError(f"--images {root}: no class sub-folders")
    samples = []
    for c, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() in IMAGE_EXT:
                samples.append(Sample(f"{name}/{f.name}", f, template.format(name.replace("_", " ")), c))
    return samples, classes


def list_csv(path: Path) -> list[Sample]:
    try:
        rows = list(csv.DictReader(path.open(newline="")))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BenchError(f"--csv {path}: unreadable ({e})") from None
    if not rows or not {"image", "caption"} <= set(rows[0]):
        raise BenchError(f"--csv {path}: needs a header with columns 'image' and 'caption'")
    samples = []
    for i, r in enumerate(rows):
        label = r.get("label")
        try:
            label = int(label) if label not in (None, "") else None
        except ValueError:
            raise BenchError(f"--csv {path}: row {i + 2}: label {label!r} is not an integer") from None
        samples.append(Sample(f"{r['image']}#{i}", path.parent / r["image"], r["caption"], label))
    return samples


def is_test(sample_id: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "big")
    return h / 2 ** 64 < fraction


def load_model(args, model_name: str, pretrained: str | None):
    import open_clip
    if args.model_config:
        open_clip.add_model_config(args.model_config)
    if model_name not in open_clip.list_models():
        raise BenchError(f"unknown open_clip model {model_name!r} (see open_clip.list_models(); or --model-config)")
    import logging
    logging.getLogger().setLevel(logging.CRITICAL)     # open_clip logs its own copy of the error below
    torch.manual_seed(args.seed)    # a model without pretrained weights must be the same one on a rerun
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=None if args.checkpoint else pretrained, device=args.device)
        if args.checkpoint:
            open_clip.load_checkpoint(model, args.checkpoint)
    except BenchError:
        raise
    except Exception as e:  # open_clip raises many kinds for missing/offline weights
        what = args.checkpoint or f"pretrained tag {pretrained!r}"
        raise BenchError(f"could not load open_clip {model_name} with {what}: {str(e).splitlines()[0][:120]} "
                         f"(offline: put the weights in the hub cache or pass --checkpoint PATH)") from None
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(model_name)


def _fingerprint(args, samples: list[Sample]) -> str:
    h = hashlib.sha256(json.dumps([args.encoder, args.checkpoint, args.model_config, args.template,
                                   args.batch_size, not args.no_normalize, args.seed]).encode())
    for s in samples:
        h.update(f"{s.id}\t{s.caption}\n".encode())
    return h.hexdigest()[:12]


def run(args) -> None:
    from tqdm import tqdm
    model_name, pretrained = parse_encoder(args.encoder)
    if not 0 < args.test_fraction < 1:
        raise BenchError(f"--test-fraction must lie in (0, 1), got {args.test_fraction}")
    if args.batch_size < 1:
        raise BenchError("--batch-size must be >= 1")
    check_writable(args.out, "--out")
    check_name(args.source, "--source")
    if args.bank is not None:
        check_name(args.bank, "--bank")
    if args.images:
        samples, classes = list_folder(Path(args.images), args.template)
    else:
        samples, classes = list_csv(Path(args.csv)), None
    missing = [str(s.image) for s in samples if not s.image.is_file()]
    if missing:
        raise BenchError(f"image file not found: {missing[0]} ({len(missing)} missing)")
    bank = args.bank or "-".join(p for p in args.encoder.split(":") if p).replace("/", "_")
    out = {split: bank_file(args.out, bank, args.source, split) for split in ("train", "test")}
    split_of = ["test" if is_test(s.id, args.test_fraction) else "train" for s in samples]
    for split in ("train", "test"):
        if split_of.count(split) < 2:
            raise BenchError(f"{len(samples)} samples leave {split_of.count(split)} in the {split} split; "
                             f"add images or change --test-fraction")
    work = out["train"].parent / f".{bank}.partial-{_fingerprint(args, samples)}"
    work.mkdir(parents=True, exist_ok=True)
    n_batches = (len(samples) + args.batch_size - 1) // args.batch_size
    done = {int(p.stem.split("_")[1]) for p in work.glob("batch_*.pt")}
    if done:
        print(f"resuming: {len(done)} of {n_batches} batches already encoded in {work}", file=sys.stderr)
    model, preprocess, tokenizer = load_model(args, model_name, pretrained)
    normalize = not args.no_normalize

    @torch.no_grad()
    def encode_text(texts):
        z = model.encode_text(tokenizer(texts).to(args.device)).float().cpu()
        return torch.nn.functional.normalize(z, dim=-1) if normalize else z

    @torch.no_grad()
    def encode_images(paths):
        from PIL import Image
        imgs = []
        for p in paths:
            try:
                with Image.open(p) as im:
                    imgs.append(preprocess(im.convert("RGB")))
            except OSError as e:
                raise BenchError(f"image {p}: unreadable ({e})") from None
        z = model.encode_image(torch.stack(imgs).to(args.device)).float().cpu()
        return torch.nn.functional.normalize(z, dim=-1) if normalize else z

    new = 0
    todo = [b for b in range(n_batches) if b not in done]
    for b in tqdm(todo, desc=f"encoding {args.source}", unit="batch", file=sys.stderr):
        if args.max_batches is not None and new >= args.max_batches:
            print(f"stopped after {new} new batches (--max-batches); rerun to continue", file=sys.stderr)
            return
        chunk = samples[b * args.batch_size:(b + 1) * args.batch_size]
        with atomic_path(work / f"batch_{b:05d}.pt") as tmp:
            torch.save({"vision": encode_images([s.image for s in chunk]),
                        "text": encode_text([s.caption for s in chunk])}, tmp)
        new += 1
    parts = [torch.load(work / f"batch_{b:05d}.pt", weights_only=True) for b in range(n_batches)]   # tensors only
    feats = {m: torch.cat([p[m] for p in parts]).contiguous() for m in ("vision", "text")}
    class_texts = encode_text([args.template.format(c.replace("_", " ")) for c in classes]) if classes else None
    labels = [s.label for s in samples]
    meta = {"encoder": args.encoder, "checkpoint": args.checkpoint, "template": args.template,
            "normalized": normalize, "source_path": str(args.images or args.csv)}
    for split in ("train", "test"):
        rows = [i for i, s in enumerate(split_of) if s == split]
        idx = torch.tensor(rows)
        has_labels = all(labels[i] is not None for i in rows)
        data = SplitFeatures(features={m: x[idx].contiguous() for m, x in feats.items()},
                             ids=[samples[i].id for i in rows],
                             labels=torch.tensor([labels[i] for i in rows]) if has_labels else None,
                             class_texts=class_texts, class_names=classes)
        write_split(out[split], data, source=args.source, split=split, encoder=bank, meta=meta)
        print(f"wrote {out[split]}: {len(rows)} pairs", file=sys.stderr)
    shutil.rmtree(work)

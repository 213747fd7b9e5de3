"""DNS training time: the official CMCL code against ``dns-official --protocol official``, same features.

The official code (github.com/Xiaohao-Liu/CMCL) is not part of this project: pass a checkout with
``--official PATH``; its modules are imported unchanged (on the CPU: its unconditional ``.cuda()`` calls are
made no-ops, and the encoders' package is skipped — only the heads are trained). It needs ``transformers``,
``accelerate`` and ``h5py``, which this project does not install. Both sides train the same generated
features (``--dims``, ``--pairs`` training pairs per step, three steps: text–video, text–audio,
vision–depth) with the official settings (AdamW, lr 1e-4, weight decay 1e-3 without the biases, linear
decay, clipping at 1.0, batch 64, λ_min 0.1), one thread, each run in a fresh process; the time counted is
training only (the official ``pre_step``, ``Trainer.train`` and ``post_step`` — not the Trainer's construction;
our ``train_experience``),
not feature loading or evaluation. Sides are interleaved over ``--repeats`` rounds and the median of the
per-round ratios official / ours is printed. Each round also times our ``vanilla`` on the same features and
settings: no DNS can train faster than the heads' own training, so official / vanilla is the ceiling of the
ratio any implementation could reach on this machine.

    python benchmarks/official_speed.py --official /path/to/CMCL [--dims 256,1024] [--repeats 3] [--set accumulate=float64]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = [("ucf101", ["text", "video"]), ("esc50", ["text", "audio"]), ("nyudv2", ["vision", "depth"])]
FOLDER = {"ucf101": "ucf101", "esc50": "esc50", "nyudv2": "nyu-d-2/raw_data"}
LR, WD, BATCH, LAMBDA, EPOCHS = 1e-4, 1e-3, 64, 0.1, 1


def make_data(work: Path, dim: int, n: int) -> None:
    """Features of a shared low-rank latent plus noise, in the official layout (one HDF5 dataset per sample
    id, a JSON of pairs per split) and as this project's banks."""
    import h5py
    import numpy as np
    import torch
    sys.path.insert(0, str(ROOT))
    from bench.features import bank
    rng = np.random.default_rng(0)
    rank = max(8, dim // 8)
    (work / "features_storage").mkdir(parents=True, exist_ok=True)
    for d, mods in STEPS:
        maps = {m: rng.standard_normal((rank, dim)) / np.sqrt(rank) for m in mods}
        for split, size in (("train", n), ("test", 64)):
            z = rng.standard_normal((size, rank))
            arr = np.stack([z @ maps[m] + 0.05 * rng.standard_normal((size, dim)) for m in mods], 1).astype(np.float32)
            ids = [f"{d}_{split}_{i:05d}" for i in range(size)]
            with h5py.File(work / "features_storage" / f"{d}_{split}_gen.h5", "w") as f:
                for sid, a in zip(ids, arr):
                    f.create_dataset(sid, data=a)
            folder = work / "dataset" / FOLDER[d]
            folder.mkdir(parents=True, exist_ok=True)
            json.dump([[{"id": sid, "data": {}, "name": "c0", "class": 0}] for sid in ids],
                      open(folder / f"paired_data_{split}.json", "w"))
            sf = bank.SplitFeatures(features={m: torch.from_numpy(arr[:, i].copy()) for i, m in enumerate(mods)}, ids=ids)
            bank.write_split(bank.bank_file(work / "banks", "gen", d, split), sf, source=d, split=split, encoder="gen")
        with h5py.File(work / "features_storage" / f"{d}_class_gen.h5", "w") as f:
            f.create_dataset("c0", data=rng.standard_normal(dim).astype(np.float32))
    toml = 'name = "official-speed"\n' + "".join(
        f'[sources.{d}]\nkind = "bank"\nmodalities = {json.dumps(m)}\n' for d, m in STEPS)
    toml += "".join(f'[[steps]]\nsource = "{d}"\npair = {json.dumps(m)}\nmetrics = ["recall"]\n' for d, m in STEPS)
    (work / "stream.toml").write_text(toml)


def official_seconds(work: Path, official: Path, dim: int) -> float:
    import torch
    torch.set_num_threads(1)
    os.chdir(work)
    sys.path.insert(0, str(official))
    torch.Tensor.cuda = lambda self, *a, **k: self          # CPU: the code calls .cuda() unconditionally
    torch.nn.Module.cuda = lambda self, *a, **k: self
    pkg = types.ModuleType("perceptors")                    # the heads only: skip the encoders' imports
    pkg.__path__ = [str(official / "perceptors")]
    sys.modules["perceptors"] = pkg
    spec = importlib.util.spec_from_file_location("perceptors.base", official / "perceptors" / "base.py")
    base = importlib.util.module_from_spec(spec)
    sys.modules["perceptors.base"] = base
    spec.loader.exec_module(base)
    from cmcl import DNS
    from eval_util import data_collator
    from feature_dataset import FeatureDataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Trainer2(Trainer):       # as the official training.py
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = model.compute_loss(inputs["modalities"], inputs["ids"], inputs["feature_pairs"])
            return (loss, None) if return_outputs else loss

    class Callback2(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model, **kwargs):
            model.update_gradients()

    model = DNS(dim, n_step=len(STEPS), lambda_min=LAMBDA)
    total = 0.0
    for step, (d, _) in enumerate(STEPS):
        ds = FeatureDataset("gen", d, modalities=[0, 1], task="train")
        ds[0]; len(ds)                                          # noqa: E702  (load before the clock starts)
        model.train()
        args = TrainingArguments(output_dir=str(work / "ckpt"), num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH,
                                 optim="adamw_torch", learning_rate=LR, warmup_steps=0, weight_decay=WD, seed=0,
                                 report_to="none", save_strategy="no", logging_strategy="no", use_cpu=True,
                                 disable_tqdm=True, dataloader_num_workers=0)
        trainer = Trainer2(model=model, args=args, train_dataset=ds, data_collator=data_collator,
                           callbacks=[Callback2()] if step > 0 else [], optimizers=(None, None))
        t0 = time.perf_counter()            # the Trainer's construction is set-up, not counted
        model.pre_step(ds)
        trainer.train()
        model.post_step(ds)
        model.next_step()
        total += time.perf_counter() - t0
    return total


def ours_seconds(work: Path, sets: list[str], method: str = "dns-official") -> float:
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    import methods
    from bench.config import OFFICIAL_LOSS, OFFICIAL_TRAINING, TrainConfig
    from bench.heads import Heads
    from bench.runner import get_scenario
    from bench.streams import load
    from bench.trainer import Trainer
    sc = get_scenario(load(str(work / "stream.toml")), "gen", str(work / "banks"))
    heads = Heads(sc.in_dims, sc.head_dim, seed=0)
    cfg = TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=LR, weight_decay=WD, **OFFICIAL_TRAINING)
    cls = methods.get(method)
    options = cls.resolve(dict(kv.split("=", 1) for kv in sets) | {"lambda_min": LAMBDA}) if method == "dns-official" else {}
    tr = Trainer(sc, cls(**options), heads, cfg, OFFICIAL_LOSS, 0)
    return sum(tr.train_experience(s)["train_seconds"] for s in range(len(STEPS)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, help="a checkout of github.com/Xiaohao-Liu/CMCL")
    ap.add_argument("--dims", default="256,1024")
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of dns-official for our side (e.g. accumulate=float64)")
    ap.add_argument("--side", choices=("official", "ours", "vanilla"), help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side == "official":
        print(official_seconds(args.work, args.official.resolve(), args.dim))
        return 0
    if args.side in ("ours", "vanilla"):
        print(ours_seconds(args.work, args.sets, "dns-official" if args.side == "ours" else "vanilla"))
        return 0
    if args.official is None or not (args.official / "cmcl" / "dns.py").is_file():
        print("error: --official must point at a checkout of the official CMCL code (cmcl/dns.py)", file=sys.stderr)
        return 2
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    for dim in (int(d) for d in args.dims.split(",")):
        with tempfile.TemporaryDirectory(prefix="official-speed-") as tmp:
            work = Path(tmp)
            make_data(work, dim, args.pairs)
            rounds = []
            for r in range(args.repeats):
                t = {}
                for side in (("ours", "vanilla", "official") if r % 2 == 0 else ("official", "vanilla", "ours")):
                    cmd = [sys.executable, __file__, "--side", side, "--work", str(work), "--dim", str(dim),
                           "--official", str(args.official)] + [f"--set={kv}" for kv in args.sets]
                    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if out.returncode != 0:
                        print(f"error: the {side} side failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                        return 1
                    t[side] = float(out.stdout.strip().splitlines()[-1])
                rounds.append(t)
                print(f"d = {dim}, round {r + 1}: official {t['official']:.2f} s, ours {t['ours']:.2f} s, "
                      f"our vanilla {t['vanilla']:.2f} s, ratio {t['official'] / t['ours']:.2f}", flush=True)
            ratio = statistics.median(t["official"] / t["ours"] for t in rounds)
            ceiling = statistics.median(t["official"] / t["vanilla"] for t in rounds)
            print(f"d = {dim}: official / ours = {ratio:.2f}; ceiling official / our vanilla = {ceiling:.2f} "
                  f"(medians of {len(rounds)} rounds; {args.pairs} pairs x {len(STEPS)} steps, {EPOCHS} epoch, "
                  f"batch {BATCH}, one thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A simulated family of pre-bound encoders, standing in for ImageBind-style features without downloads.

Generative story (all deterministic from the stream's ``[simulation] seed``):

- Latent semantics: each source ``s`` has classes with latent means ``mu_c`` in R^k and samples
  ``z = mu_c + instance_spread * eps``. Each modality sees its own noisy view ``u_m = z + noise_m * eta``
  (``noise_m`` bounds what any head can reach).
- Joint space: source ``s`` lives in a k-dimensional subspace ``J_s = [C | S_s]`` of R^d, made of a
  ``common_dim`` block ``C`` shared by every source and a ``specific_dim`` block ``S_s`` of its own —
  datasets overlap in the embedding space without filling the same directions.
- Pre-binding: modality ``m`` is a frozen "encoder" ``x_m = R_m J_s D_{s,m} u_m + floor_noise``, then L2
  normalised. ``R_m = exp(misalignment_m * K_m)`` is a random rotation of the joint space (small for well
  bound modalities such as vision and text, larger for audio, depth, tactile, thermal), so identity heads
  give above-chance but imperfect zero-shot scores. ``D_{s,m} = exp(domain_shift * K_{s,m})`` is a
  per-source rotation of the latent coordinates (domain shift): different sources then ask for different
  corrections of the same modality in the shared block ``C``, which is what makes sequential fine-tuning
  of a shared head forget.
- Modality cone: real encoders put each modality's features in a narrow cone around a mean direction (the
  modality gap), so their uncentered covariance has one dominant eigenvalue; ``offset_m`` is the norm of
  that mean direction (random per modality) before the final L2 normalisation.
- Class-name texts: the text encoder applied to the class means, ``R_text J_s D_{s,text} mu_c``. A source
  with ``texts = "class-name"`` pairs every sample with its class's text instead of a text view of its own
  (ESC-50 and VGGSound-S caption a clip by its class name): its text embeddings repeat, so retrieval has
  the real data's ties and a batch holds false negatives. The default, ``"instance"``, gives each sample a
  text of its own (Clotho-like captions).
"""
from __future__ import annotations

import math

import torch

from .features.bank import SplitFeatures
from .streams import SIM_DEFAULTS, StreamSpec

MODALITY_DEFAULTS = dict(misalignment=0.3, noise=0.5, offset=0.0)


def _orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _rotation(n: int, angle: float, gen: torch.Generator) -> torch.Tensor:
    """exp(angle * K) for a random skew-symmetric K scaled so that ``angle`` is about the radians a typical
    vector turns."""
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    k = (a - a.T) / math.sqrt(2 * n)
    return torch.linalg.matrix_exp(angle * k)


class SimulatedWorld:
    """The frozen encoders and source subspaces shared by all sources of one stream."""

    def __init__(self, spec: StreamSpec):
        p = {**SIM_DEFAULTS, **spec.simulation}
        self.p = p
        d, kc, ks = p["dim"], p["common_dim"], p["specific_dim"]
        names = [s for s in spec.sources if s not in spec.bank_sources]
        gen = torch.Generator().manual_seed(int(p["seed"]))
        q = _orthogonal(d, gen)
        self.common = q[:, :kc]
        self.bases = {}
        free = d - kc
        for i, s in enumerate(names):
            if kc + (i + 1) * ks <= d:      # disjoint source blocks while they fit
                spec_block = q[:, kc + i * ks: kc + (i + 1) * ks]
            else:                           # then random blocks orthogonal to C (overlapping each other)
                r = torch.randn(free, ks, generator=gen, dtype=torch.float64)
                spec_block = q[:, kc:] @ torch.linalg.qr(r)[0]
            self.bases[s] = torch.cat([self.common, spec_block], dim=1)   # J_s: d × k
        mods = sorted({m for s in names for m in spec.sources[s]["modalities"]})
        self.mod = {m: {**MODALITY_DEFAULTS, **spec.modalities.get(m, {})} for m in mods}
        self.rot = {m: _rotation(d, float(self.mod[m]["misalignment"]), gen) for m in mods}
        self.offset = {m: float(self.mod[m]["offset"]) * torch.nn.functional.normalize(
            torch.randn(d, generator=gen, dtype=torch.float64), dim=0) for m in mods}
        self.shift = {}
        for s in names:
            src = spec.sources[s]
            beta = float(src.get("domain_shift", p["domain_shift"]))
            for m in src["modalities"]:
                self.shift[s, m] = _rotation(kc + ks, beta, gen)
        self.source_index = {s: i for i, s in enumerate(names)}
        self.spec = spec

    def encode(self, source: str, modality: str, u: torch.Tensor, gen: torch.Generator, noise: bool = True):
        x = u @ self.shift[source, modality].T @ self.bases[source].T @ self.rot[modality].T + self.offset[modality]
        if noise:
            x = x + self.p["floor_noise"] * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        return torch.nn.functional.normalize(x, dim=1)

    def source(self, name: str) -> dict[str, SplitFeatures]:
        src = self.spec.sources[name]
        k = self.p["common_dim"] + self.p["specific_dim"]
        gen = torch.Generator().manual_seed(int(self.p["seed"]) * 1000 + 17 + self.source_index[name])
        n_cls = int(src["classes"])
        spread = float(src.get("class_spread", self.p["class_spread"]))
        inst = float(src.get("instance_spread", self.p["instance_spread"]))
        means = spread * torch.randn(n_cls, k, generator=gen, dtype=torch.float64) / math.sqrt(k)
        with_texts = src.get("class_texts", "text" in src["modalities"])
        class_texts = (self.encode(name, "text", means, gen, noise=False).float()
                       if with_texts and "text" in src["modalities"] else None)
        out = {}
        for split in ("train", "test"):
            n = int(src[split])
            labels = torch.randint(0, n_cls, (n,), generator=gen)
            z = means[labels] + inst * torch.randn(n, k, generator=gen, dtype=torch.float64) / math.sqrt(k)
            feats = {}
            for m in src["modalities"]:
                u = z + float(self.mod[m]["noise"]) * torch.randn(n, k, generator=gen, dtype=torch.float64) / math.sqrt(k)
                feats[m] = self.encode(name, m, u, gen).float().contiguous()
            if src.get("texts") == "class-name":     # drawn above all the same: other modalities keep their draws
                assert class_texts is not None
                feats["text"] = class_texts[labels].contiguous()
            out[split] = SplitFeatures(features=feats, ids=[f"{name}/{split}/{i}" for i in range(n)], labels=labels,
                                       class_texts=class_texts,
                                       class_names=None if class_texts is None else
                                       [f"{name} class {c}" for c in range(n_cls)])
        return out


def simulate(spec: StreamSpec) -> dict[str, dict[str, SplitFeatures]]:
    """All sources of a simulated stream: ``{source: {"train": SplitFeatures, "test": SplitFeatures}}``."""
    world = SimulatedWorld(spec)
    return {name: world.source(name) for name in spec.sources if name not in spec.bank_sources}

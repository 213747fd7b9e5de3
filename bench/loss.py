"""InfoNCE between the two modalities of one pair (rows of ``za`` and ``zb`` are the positive pairs)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import BenchError

DIRECTIONS = ("both", "a2b")


@dataclass(frozen=True)
class LossConfig:
    """``both``: symmetric CLIP loss (mean of a→b and b→a cross-entropy); ``a2b``: one-way, as in the
    official CMCL code. ``normalize`` L2-normalises embeddings before the dot product."""

    temperature: float = 0.05
    direction: str = "both"
    normalize: bool = False

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise BenchError(f"loss direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if not self.temperature > 0:
            raise BenchError(f"loss temperature must be > 0, got {self.temperature}")


# The official code (training.py / cmcl/base.py): cross-entropy m1→m2, temperature 1, raw head outputs.
OFFICIAL_LOSS = LossConfig(temperature=1.0, direction="a2b", normalize=False)

_labels: dict[tuple[int, torch.device], torch.Tensor] = {}


def _arange(n: int, device) -> torch.Tensor:
    key = (n, torch.device(device))
    t = _labels.get(key)
    if t is None:
        t = _labels[key] = torch.arange(n, device=device)
    return t


def pair_logits(za: torch.Tensor, zb: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    if cfg.normalize:
        za, zb = F.normalize(za, dim=-1), F.normalize(zb, dim=-1)
    return (za @ zb.T) / cfg.temperature


def info_nce(za: torch.Tensor, zb: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    logits = pair_logits(za, zb, cfg)
    labels = _arange(logits.shape[0], logits.device)
    loss = F.cross_entropy(logits, labels)
    if cfg.direction == "both":
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels))
    return loss

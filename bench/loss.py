"""InfoNCE between the two modalities of one pair (rows of ``za`` and ``zb`` are the positive pairs)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import DIRECTIONS, OFFICIAL_LOSS, LossConfig  # noqa: F401  (the loss settings live with the others)

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

"""InfoNCE between the two modalities of one pair (rows of ``za`` and ``zb`` are the positive pairs).

``info_nce`` is what every method calls. Its gradient is written out (``nce_grads``, one autograd node)
rather than left to autograd: the heads are small, so a training iteration's cost is the number of
operations, not their arithmetic, and autograd's dozen nodes for normalise, logits, two cross-entropies and
their mean cost more than the matrix products. The embeddings stay ordinary outputs of the heads, so a
method's terms on them and ``z.retain_grad()`` see the whole gradient. The values equal the composition of
torch's own functions (``reference_info_nce``) up to float rounding; ``tests/test_loss.py`` checks them
against it and with ``gradcheck``.
"""
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


def reference_info_nce(za: torch.Tensor, zb: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """InfoNCE as a composition of torch's functions (autograd differentiates it): the definition that
    ``info_nce`` reproduces, kept for its tests."""
    logits = pair_logits(za, zb, cfg)
    labels = _arange(logits.shape[0], logits.device)
    loss = F.cross_entropy(logits, labels)
    if cfg.direction == "both":
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels))
    return loss


def nce_forward(za: torch.Tensor, zb: torch.Tensor, cfg: LossConfig):
    """The loss and what ``nce_grads`` needs: (loss, saved). ``saved`` holds the unit (or raw) embeddings,
    their norms and the row and column log-softmaxes of the logits."""
    if cfg.normalize:
        na = torch.linalg.vector_norm(za, dim=1, keepdim=True).clamp_min(1e-12)   # F.normalize's eps
        nb = torch.linalg.vector_norm(zb, dim=1, keepdim=True).clamp_min(1e-12)
        ua, ub = za / na, zb / nb
    else:
        na = nb = None
        ua, ub = za, zb
    logits = torch.mm(ua, ub.T).div_(cfg.temperature)
    rows = torch.log_softmax(logits, 1)
    if cfg.direction == "both":
        cols = torch.log_softmax(logits, 0)
        loss = (rows.diagonal().mean() + cols.diagonal().mean()).mul(-0.5)
    else:
        cols = None
        loss = rows.diagonal().mean().neg()
    return loss, (ua, ub, na, nb, rows, cols)


def nce_grads(saved, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """d(scale · loss)/d za and d(scale · loss)/d zb from ``nce_forward``'s ``saved`` (left intact: a graph
    kept with ``retain_graph`` differentiates again); ``scale`` a number or a 0-d tensor (autograd's incoming
    gradient divided by the temperature).

    With P the row softmax of the logits L = ua ubᵀ / τ (and Q the column softmax), the a→b cross-entropy's
    gradient is (P − I) / (n τ) on L; the symmetric loss averages (P − I) and (Q − I). Through the logits,
    dua = G ub and dub = Gᵀ ua; through the normalisation u = z / |z|, dz = (du − u (u·du)) / |z|."""
    ua, ub, na, nb, rows, cols = saved
    G = rows.exp()
    if cols is None:
        G.diagonal().sub_(1.0)
        G.mul_(scale / ua.shape[0])
    else:
        G.add_(cols.exp()).diagonal().sub_(2.0)
        G.mul_(scale * 0.5 / ua.shape[0])
    dua, dub = torch.mm(G, ub), torch.mm(G.T, ua)
    if na is None:
        return dua, dub
    return ((dua - ua * (dua * ua).sum(1, keepdim=True)).div_(na),
            (dub - ub * (dub * ub).sum(1, keepdim=True)).div_(nb))


def embedding_grads(za: torch.Tensor, zb: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """d InfoNCE / d za and d InfoNCE / d zb without autograd (a method that needs a loss's gradient as a
    vector, as GEM's reference gradients: through a linear head W, dW = dzᵀ x and db = Σ dz)."""
    with torch.no_grad():
        return nce_grads(nce_forward(za, zb, cfg)[1], 1.0 / cfg.temperature)


class _InfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, za, zb, cfg):
        loss, saved = nce_forward(za, zb, cfg)
        ctx.save_for_backward(*saved)
        ctx.tau = cfg.temperature
        return loss

    @staticmethod
    def backward(ctx, g):
        return (*nce_grads(ctx.saved_tensors, g / ctx.tau), None)


def info_nce(za: torch.Tensor, zb: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """InfoNCE of the pairs (``za[i]``, ``zb[i]``) under ``cfg`` (temperature, direction, normalisation); the
    mean over the batch, and for ``both`` the mean of the two directions."""
    if torch.is_grad_enabled() and (za.requires_grad or zb.requires_grad):
        return _InfoNCE.apply(za, zb, cfg)
    return nce_forward(za, zb, cfg)[0]

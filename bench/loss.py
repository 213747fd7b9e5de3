"""InfoNCE between the two modalities of one pair (rows of ``za`` and ``zb`` are the positive pairs).

``info_nce`` is what every method calls. Its gradient is written out (``nce_grads``) rather than left to
autograd: the heads are small, so a training iteration's cost is the number of operations, not their
arithmetic, and autograd's dozen nodes for normalise, logits, two cross-entropies and their mean cost more
than the matrix products. ``pair_loss`` goes one step further for the training step itself: both linear
heads and the loss are one autograd node. The values equal the composition of torch's own functions
(``pair_logits`` and ``F.cross_entropy``) up to float rounding; ``tests/test_loss.py`` checks both
against that composition and with ``gradcheck``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
    ``info_nce`` and ``pair_loss`` reproduce, kept for their tests."""
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


class _PairLoss(torch.autograd.Function):
    """Two linear heads and InfoNCE as one node: inputs (x_a, x_b, W_a, b_a, W_b, b_b), outputs (loss, z_a,
    z_b). Terms a method adds on z_a or z_b reach the weights through this node's backward."""

    @staticmethod
    def forward(ctx, xa, xb, wa, ba, wb, bb, cfg):
        za, zb = torch.addmm(ba, xa, wa.T), torch.addmm(bb, xb, wb.T)
        loss, saved = nce_forward(za, zb, cfg)
        ctx.save_for_backward(xa, xb, *saved)
        ctx.tau = cfg.temperature
        ctx.set_materialize_grads(False)        # outputs nothing used: None, not a tensor of zeros to add
        return loss, za, zb

    @staticmethod
    def backward(ctx, g, gza, gzb):
        xa, xb, *saved = ctx.saved_tensors
        if g is None:
            dza, dzb = torch.zeros_like(saved[0]), torch.zeros_like(saved[1])
        else:
            dza, dzb = nce_grads(saved, g / ctx.tau)
        if gza is not None:
            dza = dza.add_(gza)
        if gzb is not None:
            dzb = dzb.add_(gzb)
        # the inputs are features (pair_loss admits none that needs a gradient)
        return None, None, torch.mm(dza.T, xa), dza.sum(0), torch.mm(dzb.T, xb), dzb.sum(0), None


def pair_loss(la: nn.Module, lb: nn.Module, xa: torch.Tensor, xb: torch.Tensor,
              cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(InfoNCE, z_a, z_b) of a batch through heads ``la`` and ``lb``: one autograd node when both are plain
    ``nn.Linear`` heads with biases, on inputs that need no gradient (the training step); otherwise the
    heads' own forward and ``info_nce``."""
    if (type(la) is nn.Linear and type(lb) is nn.Linear and la is not lb and la.bias is not None
            and lb.bias is not None and not xa.requires_grad and not xb.requires_grad and torch.is_grad_enabled()
            and not la._forward_hooks and not lb._forward_hooks
            and not la._forward_pre_hooks and not lb._forward_pre_hooks):
        return _PairLoss.apply(xa, xb, la.weight, la.bias, lb.weight, lb.bias, cfg)
    za, zb = la(xa), lb(xb)
    return info_nce(za, zb, cfg), za, zb

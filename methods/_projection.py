"""Subspace projectors for the null-space methods (DNS here; GPM and Adam-NSCL can share it).

A projector ``P = U Uᵀ`` is kept as the thinner of its basis ``U`` (d×k) or the basis ``Q`` of its
complement (``P = I − Q Qᵀ``), and applied as ``(M U) Uᵀ`` or ``M − (M Q) Qᵀ``: never a dense d×d product
per iteration (shared/DESIGN.md, "Projection methods").
"""
from __future__ import annotations

import torch

THRESHOLDS = ("abs", "rel", "energy")
# Eigenvalues below this fraction of the largest are numerical zeros (float round-off of a rank-deficient
# covariance), never part of a principal subspace, whatever the threshold.
NUMERICAL_ZERO = 1e-12


def principal_mask(evals: torch.Tensor, kind: str, value: float) -> torch.Tensor:
    """Which eigenvalues (any order) span the principal subspace.
    ``abs``: λ > value (the paper's λ_min); ``rel``: λ > value · λ_max; ``energy``: the leading eigenvalues
    holding a fraction ``value`` of the trace (GPM's criterion)."""
    top = evals.max().clamp(min=0)
    mask = evals > NUMERICAL_ZERO * top
    if kind == "abs":
        return mask & (evals > value)
    if kind == "rel":
        return mask & (evals > value * top)
    if kind == "energy":
        order = torch.argsort(evals, descending=True)
        pos = evals[order].clamp(min=0)
        total = pos.sum()
        if total <= 0:
            return torch.zeros_like(mask)
        frac_before = (torch.cumsum(pos, 0) - pos) / total   # energy held by the eigenvalues before this one
        keep_sorted = frac_before < value
        keep = torch.zeros_like(mask)
        keep[order] = keep_sorted
        return mask & keep
    raise ValueError(f"unknown threshold kind {kind!r}")


class Projector:
    """Orthogonal projector onto the principal subspace of a PSD matrix (e.g. an uncentered covariance)."""

    def __init__(self, dim: int, basis: torch.Tensor | None = None, complement: torch.Tensor | None = None,
                 rank: int = 0):
        self.dim, self.basis, self.complement, self.rank = dim, basis, complement, rank

    @classmethod
    def zero(cls, dim: int) -> "Projector":
        return cls(dim)

    @classmethod
    def from_covariance(cls, cov: torch.Tensor, kind: str, value: float, dtype=torch.float32) -> "Projector":
        evals, evecs = torch.linalg.eigh(cov.double())
        mask = principal_mask(evals, kind, value)
        k, d = int(mask.sum()), cov.shape[0]
        if k == 0:
            return cls(d)
        if k <= d - k:
            return cls(d, basis=evecs[:, mask].to(dtype).contiguous(), rank=k)
        return cls(d, complement=evecs[:, ~mask].to(dtype).contiguous(), rank=k)

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    def dense(self) -> torch.Tensor:
        if self.basis is not None:
            return self.basis @ self.basis.T
        eye = torch.eye(self.dim)
        if self.complement is not None:
            return eye - self.complement @ self.complement.T
        return eye if self.rank == self.dim else torch.zeros(self.dim, self.dim)

    def right(self, m: torch.Tensor) -> torch.Tensor:
        """M P."""
        if self.basis is not None:
            return (m @ self.basis) @ self.basis.T
        if self.complement is not None:
            return m - (m @ self.complement) @ self.complement.T
        return m if self.rank == self.dim else torch.zeros_like(m)

    def left(self, m: torch.Tensor) -> torch.Tensor:
        """P M."""
        if self.basis is not None:
            return self.basis @ (self.basis.T @ m)
        if self.complement is not None:
            return m - self.complement @ (self.complement.T @ m)
        return m if self.rank == self.dim else torch.zeros_like(m)

    def sandwich(self, left: "Projector", m: torch.Tensor) -> torch.Tensor:
        """``left.P · M · self.P`` — the part of M that DNS removes (zero if either side is zero)."""
        if self.is_zero or left.is_zero:
            return torch.zeros_like(m)
        if self.basis is not None and left.basis is not None:
            # Ũ (Ũᵀ M U) Uᵀ: about (k̃ + k)·d² flops instead of 2(k̃ + k)·d² for two separate projections
            return left.basis @ ((left.basis.T @ m) @ self.basis) @ self.basis.T
        return left.left(self.right(m))

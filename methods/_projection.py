"""What the null-space methods (``dns``, ``dns-official``, ``gpm``, ``nscl``) share, written once.

- ``Projector``: an orthogonal projector ``P = U Uᵀ`` kept as the thinner of its basis ``U`` (d×k) or the
  basis ``Q`` of its complement (``P = I − Q Qᵀ``), applied as ``(M U) Uᵀ`` or ``M − (M Q) Qᵀ``: never a
  dense d×d product per iteration.
- ``HeadProjection``: how a head's change is constrained — the raw gradient before the optimiser
  (``project = gradient``) or the optimiser's actual change after it (``update``), with the bias folded into
  [W | b] acting on [x; 1], frozen, or left free. Each method supplies only *what* to remove from a change
  Δ = [ΔW | Δb]: DNS the dual-sided part P̃ Δ P, GPM and Adam-NSCL the one-sided Δ P.
- ``OneSidedProjection``: the base of GPM and Adam-NSCL (input side only).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from bench.devices import host
from bench.method import Method

THRESHOLDS = ("abs", "rel", "energy")
NUMERICS = ("exact", "float32")            # how a projector's subspace is computed from a covariance
BIAS = ("fold", "freeze", "free")          # the bias: part of [W | b] on [x; 1], fixed, or unconstrained
PROJECT = ("update", "gradient")           # what is projected: the optimiser's change, or the raw gradient
# Eigenvalues below this fraction of the largest are numerical zeros (float round-off of a rank-deficient
# covariance), never part of a principal subspace, whatever the threshold.
NUMERICAL_ZERO = 1e-12


def principal_mask(evals: torch.Tensor, kind: str, value: float, floor: bool = True) -> torch.Tensor:
    """Which eigenvalues (any order) span the principal subspace.
    ``abs``: λ > value (the paper's λ_min); ``rel``: λ > value · λ_max; ``energy``: the leading eigenvalues
    holding a fraction ``value`` of the trace (GPM's criterion). ``floor``: numerical zeros are never kept."""
    top = evals.max().clamp(min=0)
    mask = evals > NUMERICAL_ZERO * top if floor else torch.ones_like(evals, dtype=torch.bool)
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
    def zero(cls, dim: int) -> Projector:
        return cls(dim)

    @classmethod
    def from_covariance(cls, cov: torch.Tensor, kind: str, value: float, dtype=torch.float32,
                        numerics: str = "exact") -> Projector:
        """``exact``: eigendecomposition in float64, numerical zeros (below 1e-12 of the largest eigenvalue)
        never kept, the thinner representation. ``float32``: as the official code — singular values of the
        float32 covariance thresholded as they come, so a round-off singular value of a rank-deficient
        covariance passes a threshold of 0 (the projector is then full rank), and the projector is the
        product of the kept singular vectors (``U Uᵀ``, so it is the identity only up to round-off). The
        covariance is symmetric, so its singular values are the absolute values of its eigenvalues and its
        singular vectors eigenvectors: they come from ``eigh`` (several times faster than an SVD at d = 1024),
        and the absolute values are thresholded — keeping only positive eigenvalues would drop the round-off
        directions (negative ones among them) that the official SVD keeps."""
        if numerics == "float32":
            evals, u = torch.linalg.eigh(cov.float())
            keep = host(principal_mask(evals.abs(), kind, value, floor=False)).bool()
            k = int(keep.sum())
            if k == 0:
                return cls(cov.shape[0])
            basis = u.index_select(1, keep.nonzero().squeeze(1).to(u.device)).to(dtype).contiguous()
            return cls(cov.shape[0], basis=basis, rank=k)
        evals, evecs = torch.linalg.eigh(cov.double())
        return projector_from_mask(evecs, principal_mask(host(evals), kind, value), dtype)

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    def flops(self, rows: int) -> int:
        """Floating-point operations of ``right`` on a matrix of ``rows`` rows (2·rows·d·k for the thin basis
        of width k; nothing for the zero or identity projector)."""
        thin = self.basis if self.basis is not None else self.complement
        return 0 if thin is None else 2 * rows * self.dim * thin.shape[1]

    def dense(self) -> torch.Tensor:
        if self.basis is not None:
            return self.basis @ self.basis.T
        if self.complement is not None:
            return torch.eye(self.dim, device=self.complement.device) - self.complement @ self.complement.T
        return torch.eye(self.dim) if self.rank == self.dim else torch.zeros(self.dim, self.dim)

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

    def sandwich(self, left: Projector, m: torch.Tensor) -> torch.Tensor:
        """``left.P · M · self.P`` — the part of M that DNS removes (zero if either side is zero)."""
        if self.is_zero or left.is_zero:
            return torch.zeros_like(m)
        if self.basis is not None and left.basis is not None:
            # Ũ (Ũᵀ M U) Uᵀ: about (k̃ + k)·d² flops instead of 2(k̃ + k)·d² for two separate projections
            return left.basis @ ((left.basis.T @ m) @ self.basis) @ self.basis.T
        return left.left(self.right(m))


def projector_from_basis(basis: torch.Tensor | None, dim: int, dtype=torch.float32) -> Projector:
    """The projector onto span(``basis``) (orthonormal columns, d×k), kept as the thinner of the basis and
    a basis of its orthogonal complement."""
    if basis is None or basis.shape[1] == 0:
        return Projector.zero(dim)
    k = basis.shape[1]
    if k <= dim - k:
        return Projector(dim, basis=basis.to(dtype).contiguous(), rank=k)
    q, _ = torch.linalg.qr(basis.double(), mode="complete")
    return Projector(dim, complement=q[:, k:].to(dtype).contiguous(), rank=k)


def projector_from_mask(evecs: torch.Tensor, principal: torch.Tensor, dtype=torch.float32) -> Projector:
    """The projector onto the eigenvectors selected by the boolean mask ``principal`` (columns of ``evecs``),
    kept as the thinner of the selected and the remaining eigenvectors. The mask is read on the host (the
    rank is a decision about values); the columns are gathered on ``evecs``' device."""
    principal = host(principal).bool()
    d, k = evecs.shape[0], int(principal.sum())
    if k == 0:
        return Projector.zero(d)
    cols = principal if k <= d - k else ~principal
    kept = evecs.index_select(1, cols.nonzero().squeeze(1).to(evecs.device)).to(dtype).contiguous()
    return Projector(d, basis=kept, rank=k) if k <= d - k else Projector(d, complement=kept, rank=k)


Removed = Callable[[torch.Tensor], torch.Tensor]   # Δ ([out, d (+1 with fold)]) -> the part of Δ to remove


class HeadProjection:
    """A head's change constrained: Δ ← Δ − removed(Δ), on the gradient or on the optimiser's update.

    ``bias``: ``fold`` — Δ = [ΔW | Δb] (the bias is W's last column on inputs [x; 1]) is projected as one
    matrix; ``freeze`` — a constrained head's bias does not move (its gradient is dropped, or its update
    undone) and ΔW is projected; ``free`` — ΔW is projected and the bias moves freely. Only constrained heads
    come here: a head with nothing to protect is left alone. Buffers are reused across iterations."""

    def __init__(self, bias: str):
        self.bias = bias
        self._old: dict[str, torch.Tensor] = {}      # [W | b] before the optimiser step, per head
        self._delta: dict[str, torch.Tensor] = {}

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """The inputs the constrained map sees: [x; 1] with ``fold``, else x."""
        return torch.cat([x, x.new_ones(len(x), 1)], dim=1) if self.bias == "fold" else x

    def in_dim(self, lin) -> int:
        return lin.in_features + (1 if self.bias == "fold" else 0)

    def gradient(self, lin, removed: Removed) -> None:
        """Before the optimiser: project ``.grad`` in place."""
        g = lin.weight.grad
        if g is None:
            return
        if self.bias == "freeze":
            lin.bias.grad = None
        fold = self.bias == "fold" and lin.bias.grad is not None
        d = lin.in_features
        r = removed(torch.cat([g, lin.bias.grad.unsqueeze(1)], dim=1) if fold else g)
        g.sub_(r[:, :d])
        if fold:
            lin.bias.grad.sub_(r[:, d])

    def gradient_factors(self, lin, left: torch.Tensor, right: torch.Tensor) -> None:
        """Before the optimiser, on the batch's factors: a linear head's gradient is G = Dᵀ X (D = ∂L/∂z, b×out;
        X the b inputs, [x; 1] with ``fold``), and the part to remove is ``leftᵀ right`` (b×out, b×d[+1]),
        subtracted in place — one product the size of the gradient's own, instead of projecting the dense
        out×d gradient. Same result as ``gradient``."""
        g = lin.weight.grad
        if self.bias == "freeze":
            lin.bias.grad = None
        d = lin.in_features
        g.addmm_(left.T, right[:, :d], alpha=-1.0)
        if self.bias == "fold" and lin.bias.grad is not None:
            lin.bias.grad.addmv_(left.T, right[:, d], alpha=-1.0)

    def snapshot(self, m: str, lin) -> None:
        """Before the optimiser step: remember [W | b]."""
        d = lin.in_features
        buf = self._old.get(m)
        if buf is None or buf.shape != (lin.out_features, d + 1):
            buf = self._old[m] = lin.weight.data.new_empty(lin.out_features, d + 1)
            self._delta[m] = lin.weight.data.new_empty(lin.out_features, d + (1 if self.bias == "fold" else 0))
        buf[:, :d].copy_(lin.weight.data)
        buf[:, d].copy_(lin.bias.data)

    @torch.no_grad()
    def update(self, m: str, lin, removed: Removed) -> None:
        """After the optimiser step: replace its change Δ by Δ − removed(Δ) (and undo a frozen bias's)."""
        old, d = self._old[m], lin.in_features
        if self.bias == "freeze":
            lin.bias.data.copy_(old[:, d])
        delta = self._delta[m]
        delta[:, :d].copy_(lin.weight.data).sub_(old[:, :d])
        if self.bias == "fold":
            delta[:, d].copy_(lin.bias.data).sub_(old[:, d])
        r = removed(delta)
        lin.weight.data.sub_(r[:, :d])
        if self.bias == "fold":
            lin.bias.data.sub_(r[:, d])


class ProjectionMethod(Method):
    """The hooks every null-space method shares: each constrained head's change (``_constrained``) loses
    ``_removed``'s part — on the gradient before the optimiser or on its update after it (``project``). A
    subclass sets ``self.projection = HeadProjection(bias)`` and supplies the two."""
    family = "null-space"

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self._factor: dict[str, bool] = {}     # per head of the batch: gradient projected on its factors
        self._path: dict[tuple, bool] = {}     # (step, head) -> factors chosen for the step

    def _removed(self, m: str) -> Removed:
        raise NotImplementedError

    def _constrained(self, ctx) -> list[str]:
        raise NotImplementedError

    def _factors(self, m: str, dz: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, R) such that ``_removed(m)`` of the batch gradient Dᵀ X is Lᵀ R (x: the inputs as the
        constrained map sees them)."""
        raise NotImplementedError

    def _costs(self, m: str, lin, batch: int) -> tuple[int, int]:
        """Flops of removing the part from the dense gradient, and of computing the batch's factors (the
        product Lᵀ R that then updates the gradient is added by ``before_backward``)."""
        raise NotImplementedError

    def before_backward(self, ctx):
        """With ``project = gradient``: choose per head whether its gradient is projected dense or on the
        batch's factors (cheaper for wide heads with large subspaces: d = 1024 at batch 64, never at
        sim-paper's d = 128), and keep ∂L/∂z for the factor path. The choice is made once per step and head,
        on the step's first batch, so a smaller last batch takes the same path (same round-off) as the rest."""
        if self.options.project != "gradient":
            return
        self._factor = {}
        for m, x, z in zip(ctx.pair, (ctx.xa, ctx.xb), (ctx.za, ctx.zb)):
            if m in self._constrained(ctx) and z is not None and z.requires_grad:
                key = (ctx.step, m)
                if key not in self._path:
                    lin = ctx.heads[m]
                    dense, factors = self._costs(m, lin, len(x))
                    self._path[key] = factors + 2 * lin.out_features * lin.in_features * len(x) < dense
                if self._path[key]:
                    z.retain_grad()
                    self._factor[m] = True

    def after_backward(self, ctx):
        if self.options.project != "gradient":
            return
        for m in self._constrained(ctx):
            lin = ctx.heads[m]
            dz = None
            if self._factor.get(m):
                x, z = (ctx.xa, ctx.za) if m == ctx.pair[0] else (ctx.xb, ctx.zb)
                dz = z.grad
            if dz is None or lin.weight.grad is None:
                self.projection.gradient(lin, self._removed(m))
                continue
            # a clipped gradient is c·Dᵀ X: the factors' part is scaled alike
            scale = ctx.grad_scale
            left, right = self._factors(m, dz if scale is None else dz * scale, self.projection.augment(x))
            self.projection.gradient_factors(lin, left, right)

    def before_update(self, ctx):
        if self.options.project == "update":
            for m in self._constrained(ctx):
                self.projection.snapshot(m, ctx.heads[m])

    def after_update(self, ctx):
        if self.options.project == "update":
            for m in self._constrained(ctx):
                self.projection.update(m, ctx.heads[m], self._removed(m))


class OneSidedProjection(ProjectionMethod):
    """Shared machinery of the single-sided (input-side) null-space methods, GPM and Adam-NSCL; not
    registered itself. Each head's change is replaced by Δ (I − P), where P (``_projector``) projects onto
    the subspace of the modality's past inputs that must not be disturbed, so that ΔW x = 0 for every input
    x in it; ``bias`` and ``project`` as in ``HeadProjection``."""
    family = "null-space"

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.projection = HeadProjection(self.options.bias)
        self.proj: dict[str, Projector] = {}
        self.ranks: list[dict] = []     # per step and head: the projector's rank when the step starts
        self.updates: list[dict] = []   # per step and head: how the memory changed when the step ended

    # -- what a subclass provides ----------------------------------------------------------------------
    def _projector(self, m: str, dim: int) -> Projector:
        """The projector P (dim = d_in [+1 with fold]) of modality m's protected input subspace."""
        raise NotImplementedError

    def _absorb(self, m: str, x: torch.Tensor, ctx) -> dict:
        """Add the step's inputs ``x`` of modality m (bias column appended with fold) to the memory; return
        facts to record."""
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------------
    def _removed(self, m: str):
        return self.proj[m].right                     # Δ P

    def _constrained(self, ctx) -> list[str]:
        return [m for m in ctx.pair if not self.proj[m].is_zero]

    def _factors(self, m, dz, x):
        return dz, self.proj[m].right(x)              # G P = Dᵀ (X P)

    def _costs(self, m, lin, batch):
        p = self.proj[m]
        return p.flops(lin.out_features), p.flops(batch)

    # -- hooks ---------------------------------------------------------------------------------------
    def before_training_exp(self, ctx):
        self.proj = {}
        for m in ctx.pair:
            dim = self.projection.in_dim(ctx.heads[m])
            p = self.proj[m] = self._projector(m, dim)
            self.ranks.append({"step": ctx.step, "modality": m, "input_rank": p.rank, "input_dim": dim})

    @torch.no_grad()
    def after_training_exp(self, ctx):
        for m, x in zip(ctx.pair, ctx.train):
            info = self._absorb(m, self.projection.augment(x), ctx)
            if info:
                self.updates.append({"step": ctx.step, "modality": m, **info})

    def state_summary(self):
        out = {"projector_ranks": self.ranks}
        if self.updates:
            out["memory_updates"] = self.updates
        return out

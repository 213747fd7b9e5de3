"""GPM — Gradient Projection Memory (Saha, Garg, Roy, ICLR 2021), adapted to one linear head per modality.

Also home of ``InputSideProjection``, the machinery GPM and Adam-NSCL (``methods/nscl.py``) share: a
single-sided projector on the input side of each head, ΔW ← ΔW (I − P), applied to the raw gradient before
the optimiser or to the optimiser's update after it, on bases (never a dense d×d product per iteration).
"""
from __future__ import annotations

import torch

from bench.errors import BenchError

from . import Method, register
from ._projection import NUMERICAL_ZERO, Projector

BIAS = ("fold", "freeze", "free")
PROJECT = ("gradient", "update")


def projector_from_basis(basis: torch.Tensor | None, dim: int, dtype=torch.float32) -> Projector:
    """The projector onto span(``basis``) (orthonormal columns, d×k), kept as the thinner of the basis and
    a basis of its orthogonal complement."""
    k = 0 if basis is None else basis.shape[1]
    if k == 0:
        return Projector.zero(dim)
    if k <= dim - k:
        return Projector(dim, basis=basis.to(dtype).contiguous(), rank=k)
    q, _ = torch.linalg.qr(basis.double(), mode="complete")
    return Projector(dim, complement=q[:, k:].to(dtype).contiguous(), rank=k)


def projector_from_mask(evecs: torch.Tensor, principal: torch.Tensor, dtype=torch.float32) -> Projector:
    """The projector onto the eigenvectors selected by the boolean mask ``principal`` (columns of ``evecs``),
    kept as the thinner of the selected and the remaining eigenvectors."""
    d, k = evecs.shape[0], int(principal.sum())
    if k == 0:
        return Projector.zero(d)
    if k <= d - k:
        return Projector(d, basis=evecs[:, principal].to(dtype).contiguous(), rank=k)
    return Projector(d, complement=evecs[:, ~principal].to(dtype).contiguous(), rank=k)


def gpm_expand(basis: torch.Tensor | None, x: torch.Tensor, energy: float) -> tuple[torch.Tensor, dict]:
    """GPM's basis update for one layer (Saha et al. 2021, Sec. 4): ``x`` holds the new step's
    representations as rows (n×d), ``basis`` the stored orthonormal basis M (d×k, or None).

    The residual R̂ = R − M Mᵀ R of the representation matrix R = xᵀ is decomposed (its left singular vectors
    = eigenvectors of R̂ R̂ᵀ, in float64); the fewest leading directions u₁…u_r are added such that
    ``(‖M Mᵀ R‖² + Σ_{i≤r} σ̂ᵢ²) ≥ energy · ‖R‖²``; nothing is added when the stored basis already captures
    that fraction. The new directions are re-orthogonalised against M (one Gram–Schmidt pass and a QR, for
    round-off only). Returns the new basis (float64) and what happened (captured fractions, added count)."""
    x = x.double()
    d = x.shape[1]
    total = float(x.pow(2).sum())
    if basis is None:
        basis = x.new_zeros(d, 0)
    basis = basis.double()
    info = {"added": 0, "captured_before": 1.0, "captured_after": 1.0}
    if total <= 0:
        return basis, info
    resid = x - (x @ basis) @ basis.T if basis.shape[1] else x
    resid_energy = float(resid.pow(2).sum())
    captured = (total - resid_energy) / total
    info["captured_before"] = info["captured_after"] = captured
    if captured >= energy or basis.shape[1] >= d:
        return basis, info
    evals, evecs = torch.linalg.eigh(resid.T @ resid)
    evals, evecs = evals.flip(0).clamp(min=0), evecs.flip(1)           # descending
    usable = int((evals > NUMERICAL_ZERO * total).sum())              # numerically non-zero directions
    if usable == 0:
        return basis, info
    reached = captured + torch.cumsum(evals[:usable], 0) / total
    hit = torch.nonzero(reached >= energy)
    r = int(hit[0]) + 1 if len(hit) else usable
    r = min(r, d - basis.shape[1])
    new = evecs[:, :r]
    if basis.shape[1]:
        new = new - basis @ (basis.T @ new)
    new, _ = torch.linalg.qr(new)
    basis = torch.cat([basis, new], dim=1)
    info["added"] = r
    info["captured_after"] = float(reached[r - 1].clamp(max=1.0))
    return basis, info


class InputSideProjection(Method):
    """Shared machinery of the single-sided (input-side) null-space methods; not registered itself.

    Each head's change is replaced by ΔW (I − P), where P (from ``_projector``) projects onto the subspace of
    the modality's past inputs that must not be disturbed, so that ΔW x = 0 for every input x in it. With
    ``bias = fold`` the head is treated as [W | b] acting on [x; 1]; ``freeze`` keeps the bias of a constrained
    head fixed and projects W against the raw inputs; ``free`` projects W only and lets the bias move (then old
    outputs shift by Δb). ``project = gradient`` edits ``.grad`` before the optimiser step (exact for plain
    SGD without momentum and weight decay); ``update`` lets the optimiser step and then projects the actual
    parameter change (exact with any optimiser). The projection reads the projector's basis U (or the basis
    Q of its complement, whichever is thinner, k columns) and costs two (out × d × k) products per head per
    iteration, in preallocated buffers: M ← M − (M U) Uᵀ or M ← (M Q) Qᵀ, with the bias column handled as the
    last row of U (no [W | b] concatenation). A gradient can instead be projected on the batch's factors
    (G = Δᵀ X, so G (I − P) = Δᵀ X (I − P)), which is cheaper for wide heads (``_use_factors``).
    """

    defaults: dict = {}

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.proj: dict[str, Projector] = {}
        self.ranks: list[dict] = []     # per step and head: the projector's rank when the step starts
        self.updates: list[dict] = []   # per step and head: how the memory changed when the step ended
        self._old: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._buf: dict[str, torch.Tensor] = {}
        self._delta: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._factor: dict[str, bool] = {}
        self._xbuf: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- what a subclass provides ----------------------------------------------------------------------
    def _projector(self, m: str, dim: int) -> Projector:
        """The projector P (dim = d_in [+1 with fold]) of modality m's protected input subspace."""
        raise NotImplementedError

    def _absorb(self, m: str, x: torch.Tensor, ctx) -> dict:
        """Add the step's inputs ``x`` of modality m (bias column appended with fold) to the memory; return
        facts to record."""
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------------
    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.new_ones(len(x), 1)], dim=1) if self.options.bias == "fold" else x

    def _factors(self, p: Projector, d: int):
        """(U_w, u_b, thin_is_basis): the weight rows and (fold) the bias row of the projector's thin basis."""
        u = p.basis if p.basis is not None else p.complement
        return u[:d], (u[d] if self.options.bias == "fold" else None), p.basis is not None

    def _project_(self, m: str, w: torch.Tensor, b: torch.Tensor | None, base: tuple | None = None,
                  key=None) -> None:
        """In place: [w | b] ← [w | b] (I − P) (``base`` None), or, for the update, with Δ = [w | b] − base:
        [w | b] ← base + Δ (I − P), with P modality m's projector. [w | b] is a head's weight (and, with fold,
        bias) or its gradient, or a batch of inputs with its column of ones; ``key`` names the work buffer."""
        p = self.proj[m]
        d = w.shape[1]
        uw, ub, thin_basis = self._factors(p, d)
        key = m if key is None else key
        c = self._buf.get(key)
        if c is None or c.shape != (w.shape[0], uw.shape[1]):
            c = self._buf[key] = w.new_empty(w.shape[0], uw.shape[1])
        if base is None:
            mw, mb = w, b
        else:   # the change, into reused buffers
            dw, db = self._delta.get(m, (None, None))
            if dw is None or dw.shape != w.shape:
                dw, db = torch.empty_like(w), torch.empty_like(b)
                self._delta[m] = (dw, db)
            mw, mb = torch.sub(w, base[0], out=dw), torch.sub(b, base[1], out=db)
        torch.mm(mw, uw, out=c)
        if ub is not None:
            c.addr_(mb, ub)
        if thin_basis:                     # M ← M − (M U) Uᵀ  (w = base + Δ: subtracting from w is the same)
            w.addmm_(c, uw.T, alpha=-1.0)
            if ub is not None:
                b.addmv_(c, ub, alpha=-1.0)
        else:                              # M ← (M Q) Qᵀ
            if base is None:
                torch.mm(c, uw.T, out=w)
                if ub is not None:
                    torch.mv(c, ub, out=b)
            else:
                w.copy_(base[0]).addmm_(c, uw.T)
                if ub is not None:
                    b.copy_(base[1]).addmv_(c, ub)

    # -- hooks ---------------------------------------------------------------------------------------
    def before_training_exp(self, ctx):
        self.proj = {}
        for m in ctx.pair:
            lin = ctx.heads[m]
            dim = lin.in_features + (1 if self.options.bias == "fold" else 0)
            p = self._projector(m, dim)
            self.proj[m] = p
            self.ranks.append({"step": ctx.step, "modality": m, "input_rank": p.rank, "input_dim": dim})

    def _use_factors(self, lin, p: Projector, batch: int) -> bool:
        """Gradient projection on the batch's factors: a linear head's gradient is G = Δᵀ X (Δ = ∂L/∂z, b×out),
        so G (I − P) = Δᵀ (X (I − P)), costing 2·b·d·k + out·b·d (projecting X, then recomputing the product)
        instead of 2·out·d·k (projecting G). Chosen per head when cheaper (k the thin basis' width), i.e. for
        wide heads and large subspaces (d = 1024, k ≳ 40 at batch 64); never at sim-paper's d = 128."""
        if p.is_zero:
            return False
        k = (p.basis if p.basis is not None else p.complement).shape[1]
        return 2 * batch * k + lin.out_features * batch < 2 * lin.out_features * k

    def before_backward(self, ctx):
        if self.options.project != "gradient":
            return
        for m, x, z in zip(ctx.pair, (ctx.xa, ctx.xb), (ctx.za, ctx.zb)):
            use = self._factor[m] = self._use_factors(ctx.heads[m], self.proj[m], len(x)) and z.requires_grad
            if use:
                z.retain_grad()

    def after_backward(self, ctx):
        if self.options.project != "gradient":
            return
        for m, x, z in zip(ctx.pair, (ctx.xa, ctx.xb), (ctx.za, ctx.zb)):
            p, lin = self.proj[m], ctx.heads[m]
            if p.is_zero or lin.weight.grad is None:
                continue
            if self.options.bias == "freeze":
                lin.bias.grad = None
            dz = z.grad if self._factor.get(m) and z is not None else None
            if dz is None:
                self._project_(m, lin.weight.grad, lin.bias.grad)
                continue
            xw, xb = self._xbuf.get(m, (None, None))
            if xw is None or xw.shape != x.shape:
                xw, xb = torch.empty_like(x), x.new_empty(len(x))
                self._xbuf[m] = (xw, xb)
            xw.copy_(x)
            xb.fill_(1.0)
            self._project_(m, xw, xb if self.options.bias == "fold" else None, key=(m, "x"))    # X (I − P)
            torch.mm(dz.T, xw, out=lin.weight.grad)
            if lin.bias.grad is not None:
                if self.options.bias == "fold":
                    torch.mv(dz.T, xb, out=lin.bias.grad)
                # free: the bias gradient Δᵀ1 is left as autograd computed it

    def before_update(self, ctx):
        if self.options.project != "update":
            return
        for m in ctx.pair:
            if self.proj[m].is_zero:
                continue
            lin = ctx.heads[m]
            old = self._old.get(m)
            if old is None or old[0].shape != lin.weight.shape:
                old = self._old[m] = (torch.empty_like(lin.weight.data), torch.empty_like(lin.bias.data))
            old[0].copy_(lin.weight.data)
            old[1].copy_(lin.bias.data)

    @torch.no_grad()
    def after_update(self, ctx):
        if self.options.project != "update":
            return
        for m in ctx.pair:
            if self.proj[m].is_zero:
                continue
            lin, old = ctx.heads[m], self._old[m]
            if self.options.bias == "freeze":
                lin.bias.data.copy_(old[1])
            self._project_(m, lin.weight.data, lin.bias.data, base=old)

    @torch.no_grad()
    def after_training_exp(self, ctx):
        for m, x in zip(ctx.pair, ctx.train):
            info = self._absorb(m, self._augment(x), ctx)
            if info:
                self.updates.append({"step": ctx.step, "modality": m, **info})

    def state_summary(self):
        out = {"projector_ranks": self.ranks}
        if self.updates:
            out["memory_updates"] = self.updates
        return out


@register("gpm")
class GPM(InputSideProjection):
    """GPM: project each head's gradient off the span of its modality's past inputs (energy-thresholded SVD).

    Saha, Garg & Roy, "Gradient Projection Memory for Continual Learning", ICLR 2021. After each task GPM
    stores, per layer, an orthonormal basis M of the layer's past input representations, grown incrementally:
    the new task's representations are first projected off M, and only the leading left singular vectors of
    the residual needed to bring the captured fraction of the new representations' energy (‖·‖²_F) up to a
    threshold ε_th are appended; later gradients are replaced by G − G M Mᵀ, so that, for plain SGD, the layer's
    output on every stored input direction does not change.

    Adaptation to contrastive modality pairs: each head is a single-layer network whose input is the frozen
    encoder's feature, so "the layer's input representation" is the step's feature matrix of that modality
    (all the step's training inputs, or ``samples`` random ones — the paper uses a random batch of ~100–125
    examples per task). Memories are per modality and shared by every pair the modality appears in: training
    text–audio protects the text inputs seen in text–video, text–audio, … and a modality met for the first
    time is free. ``bias = fold`` (default) treats [W | b] as one map on [x; 1] (the constant 1 is part of
    the representation, so the bias is constrained with W); ``freeze`` / ``free`` as in ``dns``. The
    constraint is one-sided, ΔW = G (I − M Mᵀ): an old input's embedding W x must not move at all. DNS's
    dual-sided projector removes only P̃ ΔW P — the part that changes old inputs' embeddings *in the
    directions of their old partners' embeddings* — because in contrastive learning only the alignment
    scores ⟨W^a x_a, W^b x_b⟩ matter: GPM protects a superset of what the scores need and is less plastic
    on shared modalities at the same stability.

    Options: ``energy`` ε_th (0.97, the paper's threshold for the first layers of its networks; on sim-paper
    a step's [x; 1] has ~33 signal directions — the modality cone, 16 shared and 16 source-specific ones —
    over a flat noise floor: 0.97 keeps 31 of them, 0.99 all 33, 0.9 and below give up stability for
    plasticity); ``energy_step`` added to ε_th per step (0; the paper uses 0.003 per task on
    CIFAR-100/miniImageNet); ``samples`` (0: all); ``project = gradient`` (the paper's: the raw gradient is
    projected before the optimiser — exact with plain SGD; AdamW's per-coordinate rescaling breaks the
    guarantee: on sim-paper AlignDev 0.24 against 0.09 with ``update``) or ``update`` (the optimiser's change
    is projected after its step, exact with any optimiser).
    """

    defaults = dict(energy=0.97, energy_step=0.0, samples=0, project="gradient", bias="fold")
    choices = dict(project=PROJECT, bias=BIAS)

    def __init__(self, **overrides):
        super().__init__(**overrides)
        if not 0.0 <= self.options.energy <= 1.0:
            raise BenchError(f"option gpm.energy must be in [0, 1], got {self.options.energy}")
        self.basis: dict[str, torch.Tensor] = {}   # modality -> orthonormal d_in [+1] × k, float64

    def _projector(self, m, dim):
        return projector_from_basis(self.basis.get(m), dim)

    def _absorb(self, m, x, ctx):
        if self.options.samples and len(x) > self.options.samples:
            gen = ctx.rng("subspace")
            x = x[torch.randperm(len(x), generator=gen)[: int(self.options.samples)]]
        threshold = min(1.0, self.options.energy + self.options.energy_step * ctx.step)
        self.basis[m], info = gpm_expand(self.basis.get(m), x, threshold)
        return {"basis_rank": self.basis[m].shape[1], "added": info["added"],
                "captured_before": round(info["captured_before"], 6),
                "captured_after": round(info["captured_after"], 6)}

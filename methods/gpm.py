"""GPM — Gradient Projection Memory (Saha, Garg, Roy, ICLR 2021), adapted to one linear head per modality."""
from __future__ import annotations

import torch

from bench.devices import host
from bench.errors import BenchError

from . import register
from ._projection import BIAS, NUMERICAL_ZERO, PROJECT, OneSidedProjection, projector_from_basis


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
    total = float(host(x.pow(2).sum()))
    if basis is None:
        basis = x.new_zeros(d, 0)
    basis = basis.double()
    info = {"added": 0, "captured_before": 1.0, "captured_after": 1.0}
    if total <= 0:
        return basis, info
    resid = x - (x @ basis) @ basis.T if basis.shape[1] else x
    resid_energy = float(host(resid.pow(2).sum()))
    captured = (total - resid_energy) / total
    info["captured_before"] = info["captured_after"] = captured
    if captured >= energy or basis.shape[1] >= d:
        return basis, info
    evals, evecs = torch.linalg.eigh(resid.T @ resid)
    evals, evecs = host(evals).flip(0).clamp(min=0), evecs.flip(1)     # descending; the rank is read on the host
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


@register("gpm")
class GPM(OneSidedProjection):
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

    Options: ``energy`` ε_th (0.97, the paper's threshold for the first layers of its networks; what it keeps on
    sim-paper: docs/results.md); ``energy_step`` added to ε_th per step (0; the paper uses 0.003 per task on
    CIFAR-100/miniImageNet); ``samples`` (0: all); ``project = gradient`` (the paper's: the raw gradient is
    projected before the optimiser — exact with plain SGD; AdamW's per-coordinate rescaling breaks the
    guarantee) or ``update`` (the optimiser's change
    is projected after its step, exact with any optimiser).
    """

    defaults = dict(energy=0.97, energy_step=0.0, samples=0, project="gradient", bias="fold")
    search_space = dict(energy=[0.5, 0.7, 0.8, 0.9, 0.97, 0.99])
    bounds = dict(energy=(0, 1, False))
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

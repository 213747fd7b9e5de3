"""Adam-NSCL — training in the null space of the feature covariance (Wang, Li, Sun, Xu, CVPR 2021), adapted to
one linear head per modality."""
from __future__ import annotations

import torch

from bench.devices import host
from bench.errors import BenchError

from . import register
from ._projection import BIAS, NUMERICAL_ZERO, PROJECT, OneSidedProjection, Projector, projector_from_mask

NULL_RULES = ("min_ratio", "rel", "abs")


def null_mask(evals: torch.Tensor, rule: str, value: float) -> torch.Tensor:
    """Which eigenvalues of a PSD covariance span its (approximate) null space.
    ``min_ratio``: λ ≤ value · λ_min (Adam-NSCL's rule, λ_min the smallest eigenvalue); ``rel``:
    λ ≤ value · λ_max; ``abs``: λ ≤ value. Numerical zeros (λ ≤ 1e-12 · λ_max) are always in it."""
    top = float(evals.max().clamp(min=0))
    floor = NUMERICAL_ZERO * top
    if rule == "min_ratio":
        bound = value * float(evals.min().clamp(min=0))
    elif rule == "rel":
        bound = value * top
    elif rule == "abs":
        bound = value
    else:
        raise ValueError(f"unknown null-space rule {rule!r}")
    return evals <= max(bound, floor)


@register("nscl")
class NSCL(OneSidedProjection):
    """Adam-NSCL: Adam's update projected onto the null space of the uncentered covariance of past head inputs.

    Shipeng Wang, Xiaorong Li, Jian Sun & Zongben Xu, "Training Networks in Null Space of Feature Covariance
    for Continual Learning", CVPR 2021. Per layer, Adam-NSCL keeps the running uncentered covariance X̄ = XᵀX/n of
    the layer's inputs over all past tasks; after task t−1 it takes the eigenvectors U₂ whose eigenvalues are
    the smallest — below ``a · λ_min`` (λ_min the smallest eigenvalue; ``a`` a hyper-parameter) — as an
    approximate null space, and every later Adam step Δ (the update, not the raw gradient) is replaced by
    Δ U₂ U₂ᵀ, so that X̄ Δᵀ ≈ 0: the layer's output on past inputs barely moves.

    Adaptation to contrastive modality pairs: each head is a single-layer network on the frozen encoder's
    feature; the covariance is per modality (its own sample count, as ``dns``'s ``counts = modality``) and
    shared by every pair the modality appears in, so a text–audio step keeps the text inputs of earlier
    text–video and text–audio steps; a modality met for the first time is free. ``bias = fold`` (default)
    treats [W | b] as one map on [x; 1] (the covariance is that of [x; 1]); ``freeze`` / ``free`` as in
    ``dns``. The constraint is one-sided (input side only, ΔW = Δ U₂ U₂ᵀ): old inputs' embeddings must not
    move at all, whereas DNS's dual-sided projector removes only P̃ ΔW P, the part that changes old inputs'
    embeddings in the directions of their old partners' embeddings — all that the contrastive alignment scores
    ⟨W^a x_a, W^b x_b⟩ depend on — so at the same stability Adam-NSCL is less plastic on shared modalities.
    Options: ``threshold`` / ``value``: ``min_ratio`` λ ≤ value·λ_min (the paper's rule, value = its ``a``;
    default 10), ``rel`` λ ≤ value·λ_max, ``abs`` λ ≤ value. Where ``a`` puts the null space's edge on sim-paper's
    spectrum: docs/results.md. ``project = update`` (the paper's: the optimiser's actual change is projected after
    its step, exact with Adam/AdamW) or ``gradient`` (the raw gradient before the optimiser, exact with plain
    SGD only). The projection uses the thinner of the null-space basis and its complement.
    ``normalize_projector`` (false): the authors' code divides the projector U₂U₂ᵀ by its Frobenius norm
    √(dim of the null space), which shrinks every projected step by that factor (a smaller effective
    learning rate; the paper does not mention it); true reproduces it.
    """

    defaults = dict(threshold="min_ratio", value=10.0, project="update", bias="fold", normalize_projector=False)
    search_space = dict(value=[2.0, 10.0, 50.0, 250.0, 1e3, 1e4])
    choices = dict(threshold=NULL_RULES, project=PROJECT, bias=BIAS)

    def __init__(self, **overrides):
        super().__init__(**overrides)
        if self.options.value < 0:
            raise BenchError(f"option nscl.value must be >= 0, got {self.options.value}")
        self.cov: dict[str, torch.Tensor] = {}   # modality -> d_in [+1] square, float64
        self.count: dict[str, int] = {}

    def _projector(self, m, dim):
        cov = self.cov.get(m)
        if cov is None:
            return Projector.zero(dim)
        evals, evecs = torch.linalg.eigh(cov)
        return projector_from_mask(evecs, ~null_mask(host(evals), self.options.threshold, self.options.value))

    def _removed(self, m: str):
        p = self.proj[m]
        if not self.options.normalize_projector or p.is_zero:
            return p.right                                        # Δ P
        scale = 1.0 / max(p.dim - p.rank, 1) ** 0.5              # 1 / ‖U₂U₂ᵀ‖_F
        return lambda delta: delta - (delta - p.right(delta)) * scale     # Δ − Δ U₂U₂ᵀ / ‖U₂U₂ᵀ‖_F

    def _use_factors(self, lin, p, batch):
        return not self.options.normalize_projector and super()._use_factors(lin, p, batch)

    def _absorb(self, m, x, ctx):
        x = x.double()
        old_n, n = self.count.get(m, 0), len(x)
        new_n = old_n + n
        cov = x.T @ x / new_n
        prev = self.cov.get(m)
        self.cov[m] = cov if prev is None else prev * (old_n / new_n) + cov
        self.count[m] = new_n
        return {}

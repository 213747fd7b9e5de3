from __future__ import annotations

import torch

from bench.errors import BenchError
from bench.loss import info_nce

from . import register
from ._importance import QuadraticPenalty, Term, batches, head_params


@register("ewc")
class EWC(QuadraticPenalty):
    """EWC: quadratic anchor weighted by the diagonal Fisher of each past step's InfoNCE loss.

    Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017. After each task
    EWC stores the parameters θ*_k and the diagonal of the Fisher information F_k at them, and later adds
    ``λ/2 · Σ_k Σ_i F_k,i (θ_i − θ*_k,i)²`` to the loss. Adaptation to contrastive modality pairs: when a
    step ends, F_k is estimated for every parameter (weight and bias) of the two heads the step trained, as
    the empirical Fisher of the step's InfoNCE loss (``ctx.loss_cfg``) on its own training pairs. InfoNCE is
    a loss of a *batch* (the other pairs are the negatives), not a sum over samples, so the per-sample
    squared gradients of the paper become squared gradients of per-batch losses: the step's data is
    shuffled once (fixed per step) and cut into batches of ``fisher_batch`` pairs (the trainer's batch size
    is 64 by default; set it to the run's ``--batch-size`` if that differs), and F is the mean of the
    squared batch gradients. This is smaller than a per-sample Fisher by about the batch size; ``strength``
    absorbs the scale. One (F, θ*) is kept per past step and head (two head copies per step, no data).
    While step t trains a pair, the penalty runs over the terms of every earlier step that trained either
    head of the pair; a modality seen for the first time is free, heads outside the pair do not move.

    Options: ``strength`` (λ); ``fisher_batch`` (pairs per batch of the Fisher estimate, ≥ 2).
    """

    defaults = {"strength": 1e4, "fisher_batch": 64}
    search_space = {"strength": [1.0, 10.0, 1e2, 1e3, 1e4]}
    bounds = dict(fisher_batch=(2, None, False))
    factor_half = True

    def __init__(self, **overrides):
        super().__init__(**overrides)
        if self.options.fisher_batch < 2:
            raise BenchError("option ewc.fisher_batch must be >= 2 (InfoNCE needs negatives)")
        self.steps: list[dict[str, Term]] = []     # per finished step: modality -> [(F, θ*) per parameter]

    def terms(self, m: str) -> list[Term]:
        return [s[m] for s in self.steps if m in s]

    @torch.enable_grad()
    def fisher(self, ctx) -> dict[str, list[torch.Tensor]]:
        """Diagonal empirical Fisher of the step's InfoNCE per parameter of the pair's heads (mean over batches
        of the squared gradient of the batch loss)."""
        a, b = ctx.pair
        xa, xb = ctx.train
        la, lb = ctx.heads[a], ctx.heads[b]
        params = head_params(ctx, a) + head_params(ctx, b)
        sums = [torch.zeros_like(p) for p in params]
        idxs = batches(ctx, len(xa), self.options.fisher_batch, min_size=2)
        for idx in idxs:
            idx = idx.to(xa.device)
            loss = info_nce(la(xa[idx]), lb(xb[idx]), ctx.loss_cfg)
            for s, g in zip(sums, torch.autograd.grad(loss, params)):
                s.addcmul_(g, g)
        n = max(len(idxs), 1)
        k = len(head_params(ctx, a))
        return {a: [s / n for s in sums[:k]], b: [s / n for s in sums[k:]]}

    def store(self, ctx, fisher: dict[str, list[torch.Tensor]]) -> None:
        """Keep one (F, θ*) per head for this step."""
        self.steps.append({m: [(f, p.detach().clone()) for f, p in zip(fs, head_params(ctx, m))]
                           for m, fs in fisher.items()})

    def after_training_exp(self, ctx):
        super().after_training_exp(ctx)
        fisher = self.fisher(ctx)
        self.store(ctx, fisher)
        self.record(ctx, fisher)

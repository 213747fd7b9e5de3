"""Shared machinery of the importance-weighted quadratic penalties (``ewc``, ``ewc-online``, ``si``, ``mas``).

Each of these methods keeps, per modality head, one or more *terms* ``(Ω_k, θ*_k)`` — an importance and an
anchor per parameter (weight and bias) — and adds to the task loss

    factor · Σ_{m ∈ pair} Σ_k Σ_i Ω_k,i (θ_i − θ*_k,i)²        (factor = strength/2 for EWC, strength otherwise)

over the two heads of the current pair (the other heads do not move). A modality no finished step trained has
no term and is free.

The hot loop: the terms of a head do not change during a step, so when a step starts they are folded into one
quadratic per parameter, ``Σ_k Ω_k (θ − θ*_k)² = Ω_tot (θ − c)² + const`` with ``Ω_tot = Σ_k Ω_k`` and
``c = Σ_k Ω_k θ*_k / Ω_tot`` (computed in float64), and the penalty's gradient ``2·factor·Ω_tot·(θ − c)`` is
added to ``.grad`` in ``after_backward`` — the same update as adding the penalty to the loss, without an
autograd graph and with preallocated buffers (three tensor ops per parameter, no per-element Python).
``penalty(ctx)`` evaluates the exact penalty (with autograd) for tests and inspection.
"""
from __future__ import annotations

import torch

from bench.devices import host

from . import Method

Term = list[tuple[torch.Tensor, torch.Tensor]]     # per parameter of a head (weight, bias): (importance, anchor)


def head_params(ctx, m: str) -> list[torch.nn.Parameter]:
    return list(ctx.heads[m].parameters())


def batches(ctx, n: int, size: int, min_size: int = 1) -> list[torch.Tensor]:
    """A shuffle of ``range(n)`` cut into batches of ``size``, from the run's seed and the step (the
    ``importance`` stream of ``bench.seeds``); a last batch smaller than ``min_size`` is dropped."""
    perm = torch.randperm(n, generator=ctx.rng("importance"))
    return [idx for idx in perm.split(size) if len(idx) >= min_size]


def fold(terms: list[Term]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per parameter: (Ω_tot, c) with Σ_k Ω_k (θ − θ*_k)² = Ω_tot (θ − c)² + const. Where Ω_tot = 0 the centre
    is the latest anchor (any value would do)."""
    out = []
    for per_param in zip(*terms):
        imps = torch.stack([imp.double() for imp, _ in per_param])
        anchors = torch.stack([a.double() for _, a in per_param])
        total = imps.sum(0)
        weighted = (imps * anchors).sum(0)
        centre = torch.where(total > 0, weighted / total.clamp_min(torch.finfo(torch.float64).tiny), anchors[-1])
        dtype = per_param[0][1].dtype
        out.append((total.to(dtype), centre.to(dtype)))
    return out


class QuadraticPenalty(Method):
    """Base of the importance-weighted anchors (not registered). Subclasses implement ``terms(m)`` (the
    ``(importance, anchor)`` terms of head m, ``[]`` if none) and compute importances in
    ``after_training_exp``; ``factor_half`` says whether the penalty is ``strength/2 · …`` (EWC) or
    ``strength · …`` (SI, MAS)."""
    family = "regularisation"

    defaults = {"strength": 1.0}
    factor_half = False

    def __init__(self, **overrides):
        super().__init__(**overrides)
        # for the current step: (param, coef = 2·factor·Ω_tot, centre, buffer holding the penalty's gradient)
        self._active: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.log: list[dict] = []

    @property
    def factor(self) -> float:
        return 0.5 * self.options.strength if self.factor_half else self.options.strength

    def terms(self, m: str) -> list[Term]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- the penalty -----------------------------------------------------------------------------------
    def penalty(self, ctx) -> torch.Tensor | float:
        """The exact penalty over the heads of ``ctx.pair`` (differentiable; 0.0 when nothing is anchored)."""
        total: torch.Tensor | float = 0.0
        for m in dict.fromkeys(ctx.pair):
            for term in self.terms(m):
                for p, (imp, anchor) in zip(head_params(ctx, m), term):
                    total = total + (imp * (p - anchor).pow(2)).sum()
        return self.factor * total

    def before_training_exp(self, ctx):
        self._active = []
        if self.options.strength == 0:
            return
        for m in dict.fromkeys(ctx.pair):
            terms = self.terms(m)
            if not terms:
                continue                           # never trained: free
            for p, (imp, centre) in zip(head_params(ctx, m), fold(terms)):
                self._active.append((p, (2.0 * self.factor) * imp, centre, torch.empty_like(p)))

    def after_backward(self, ctx):
        for p, coef, centre, buf in self._active:
            torch.sub(p.detach(), centre, out=buf)
            buf.mul_(coef)
            if p.grad is None:
                p.grad = buf.clone()
            else:
                p.grad.add_(buf)

    def after_training_exp(self, ctx):
        self._active = []

    # -- bookkeeping -----------------------------------------------------------------------------------
    def record(self, ctx, importances: dict[str, list[torch.Tensor]]) -> None:
        """Log the mean importance of each trained head's weight and bias (in the run JSON)."""
        self.log.append({"step": ctx.step, "pair": list(ctx.pair),
                         "mean_importance": {m: [float(host(t.mean())) for t in ts] for m, ts in importances.items()}})

    def state_summary(self) -> dict:
        return {"importance": self.log}

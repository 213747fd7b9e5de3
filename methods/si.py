from __future__ import annotations

import torch

from . import register
from ._importance import QuadraticPenalty, Term, head_params


@register("si")
class SI(QuadraticPenalty):
    """Synaptic Intelligence: importance from each parameter's path-integral contribution to the loss drop.

    Zenke, Poole, Ganguli, "Continual Learning Through Synaptic Intelligence", ICML 2017. During a task, every
    optimiser step adds ``ω_i += −g_i · Δθ_i`` (the gradient times the actual parameter change: a
    parameter's share of the decrease of the loss along the training path); when the task ends,
    ``Ω_i += ω_i / (Δ_i² + ξ)`` with Δ_i the parameter's total change over the task, ω is reset and θ* set to
    the current parameters; later tasks add ``c · Σ_i Ω_i (θ_i − θ*_i)²``. Adaptation to contrastive
    modality pairs: ω, Ω and θ* are kept per parameter (weight and bias) of each modality head and updated
    only for the two heads the step trains (Ω accumulates over every step that trained the head); the
    penalty runs over the two heads of the current pair; a modality no step trained is free. Δθ is the
    change the optimiser (AdamW: including decoupled weight decay) actually made: ``before_update`` copies
    the parameters into preallocated buffers and ``after_update`` subtracts — a copy, not a view of the
    live weights (a view makes Δθ ≡ 0 and the method a silent no-op).

    Options: ``strength`` (c); ``xi`` (ξ, the damping of the denominator); ``omega_grad``: which gradient g
    enters ω — ``task`` (default) the gradient of the step's InfoNCE alone, so ω measures the parameter's
    contribution to the drop of the *task's* loss (the penalty's own gradient, added to ``.grad`` before
    the optimiser step, is subtracted again), or ``total`` the full gradient including the SI penalty
    (what implementations that read ``.grad`` after the backward of the regularised loss do, e.g.
    Avalanche); ``clamp``: clip each step's contribution ω/(Δ² + ξ) at 0 (off by default, as in the
    paper; ω can be negative for a parameter the momentum carried uphill, and a negative Ω would push
    the parameter away from its anchor).
    """

    defaults = {"strength": 0.3, "xi": 1e-3, "omega_grad": "task", "clamp": False}
    search_space = {"strength": [0.03, 0.3, 3.0]}
    bounds = dict(xi=(0, None, True))
    choices = {"omega_grad": ("task", "total")}

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.big_omega: dict[str, list[torch.Tensor]] = {}     # modality -> Ω per parameter
        self.anchor: dict[str, list[torch.Tensor]] = {}        # modality -> θ* per parameter
        self.buffers: dict[str, list[tuple[torch.Tensor, ...]]] = {}   # modality -> (ω, prev, Δ, start) per parameter
        # for the current step: (param, ω, prev, Δ buffer, penalty-gradient buffer or None)
        self._track: list[tuple] = []

    def terms(self, m: str) -> list[Term]:
        return [list(zip(self.big_omega[m], self.anchor[m]))] if m in self.big_omega else []

    def _buffers(self, ctx, m):
        if m not in self.buffers:
            self.buffers[m] = [tuple(torch.zeros_like(p, memory_format=torch.contiguous_format) for _ in range(4))
                               for p in head_params(ctx, m)]
        return self.buffers[m]

    @torch.no_grad()
    def before_training_exp(self, ctx):
        super().before_training_exp(ctx)
        pen = {id(p): buf for p, _, _, buf in self._active} if self.options.omega_grad == "task" else {}
        self._track = []
        for m in dict.fromkeys(ctx.pair):
            for p, (omega, prev, delta, start) in zip(head_params(ctx, m), self._buffers(ctx, m)):
                omega.zero_()
                start.copy_(p)
                self._track.append((p, omega, prev, delta, pen.get(id(p))))

    @torch.no_grad()
    def before_update(self, ctx):
        for p, _, prev, _, _ in self._track:
            prev.copy_(p)                      # a copy of the values, not a view of the live weights

    @torch.no_grad()
    def after_update(self, ctx):
        for p, omega, prev, delta, pen in self._track:
            torch.sub(p, prev, out=delta)      # the change the optimiser made
            omega.addcmul_(p.grad, delta, value=-1.0)
            if pen is not None:                # g = task gradient: take the penalty's share back out
                omega.addcmul_(pen, delta)

    @torch.no_grad()
    def after_training_exp(self, ctx):
        super().after_training_exp(ctx)
        new = {}
        for m in dict.fromkeys(ctx.pair):
            params = head_params(ctx, m)
            contrib = []
            for p, (omega, _, _, start) in zip(params, self._buffers(ctx, m)):
                c = omega / ((p - start).pow(2) + self.options.xi)
                contrib.append(c.clamp_min(0) if self.options.clamp else c)
            old = self.big_omega.get(m)
            self.big_omega[m] = contrib if old is None else [o + c for o, c in zip(old, contrib)]
            self.anchor[m] = [p.detach().clone() for p in params]
            new[m] = contrib
        self._track = []
        self.record(ctx, new)

from __future__ import annotations

import torch

from . import register
from ._importance import Term, head_params
from .ewc import EWC


@register("ewc-online")
class OnlineEWC(EWC):
    """Online EWC: one running Fisher per head, decayed by gamma, anchored at the head's latest values.

    Schwarz et al., "Progress & Compress: A scalable framework for continual learning", ICML 2018. Instead of
    one (F_k, θ*_k) per past task, online EWC keeps a single running Fisher ``F ← γ·F + F_new`` and the
    latest parameters θ* as the anchor, so memory and cost do not grow with the number of tasks; the penalty
    is ``λ/2 · Σ_i F_i (θ_i − θ*_i)²``. Adaptation to contrastive modality pairs: as in ``ewc`` (empirical
    Fisher of the step's InfoNCE from squared per-batch gradients, batches of ``fisher_batch``), with one
    running Fisher and one anchor per modality head. The decay γ is applied when a step trains the head (the
    head's own tasks are the ones it remembers); a head no step trained is free.

    Options: ``strength`` (λ); ``gamma`` (γ, 1 = no decay); ``fisher_batch``.
    """

    defaults = {"strength": 1e3, "gamma": 0.9, "fisher_batch": 64}
    search_space = {"strength": [1e2, 1e3, 1e4]}
    bounds = dict(fisher_batch=(2, None, False), gamma=(0, 1, False))

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.running: dict[str, Term] = {}         # modality -> [(F, θ*) per parameter]

    def terms(self, m: str) -> list[Term]:
        return [self.running[m]] if m in self.running else []

    @torch.no_grad()
    def store(self, ctx, fisher):
        for m, fs in fisher.items():
            old = self.running.get(m)
            new_f = fs if old is None else [self.options.gamma * f_old + f for (f_old, _), f in zip(old, fs)]
            self.running[m] = [(f, p.detach().clone()) for f, p in zip(new_f, head_params(ctx, m))]

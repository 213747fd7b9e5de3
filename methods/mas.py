from __future__ import annotations

import torch

from bench.errors import BenchError

from . import register
from ._importance import QuadraticPenalty, Term, batches, head_params


@register("mas")
class MAS(QuadraticPenalty):
    """MAS: label-free importance from how sensitive each head's embeddings are to its parameters.

    Aljundi, Babiloni, Elhoseiny, Rohrbach, Tuytelaars, "Memory Aware Synapses: Learning what (not) to
    forget", ECCV 2018. After a task, the importance of a parameter is the mean over the task's data of the
    absolute gradient of the squared L2 norm of the network's output, ``Ω_i = mean_x |∂‖F(x)‖²/∂θ_i|``
    (no labels or loss needed); later tasks add ``λ · Σ_i Ω_i (θ_i − θ*_i)²`` with the importances of the
    earlier tasks accumulated (the authors' code adds each task's Ω to the stored one). Adaptation to contrastive
    modality pairs: the "output" of a modality is its embedding, the raw head output ``head_m(x)`` (before
    any normalisation the loss applies, under which the norm would be constant); when a step ends, Ω is
    computed for every parameter (weight and bias) of the two heads the step trained, on the step's own
    inputs of each modality, and added to the head's Ω (``accumulate = "sum"``, the authors' rule) or
    folded into a running average weighted by the number of samples (``"average"``); θ* is set to the head's
    current values. The penalty runs over the two heads of the current pair; a
    modality no step trained is free. The gradient is taken per batch of ``importance_batch`` inputs (of
    the batch mean of ‖head(x)‖², then its absolute value, as the authors' code does); ``importance_batch
    = 1`` gives the paper's per-sample definition exactly (slower).

    Options: ``strength`` (λ); ``importance_batch`` (inputs per gradient, 1 = per sample); ``accumulate``
    (``sum`` or ``average``).
    """

    defaults = {"strength": 40.0, "importance_batch": 64, "accumulate": "sum"}
    search_space = {"strength": [0.4, 4.0, 40.0, 400.0]}
    bounds = dict(importance_batch=(1, None, False))
    choices = {"accumulate": ("sum", "average")}

    def __init__(self, **overrides):
        super().__init__(**overrides)
        if self.options.importance_batch < 1:
            raise BenchError("option mas.importance_batch must be >= 1")
        self.omega: dict[str, list[torch.Tensor]] = {}     # modality -> accumulated Ω per parameter
        self.count: dict[str, int] = {}                   # modality -> samples behind Ω
        self.anchor: dict[str, list[torch.Tensor]] = {}

    def terms(self, m: str) -> list[Term]:
        return [list(zip(self.omega[m], self.anchor[m]))] if m in self.omega else []

    @torch.enable_grad()
    def importance(self, ctx) -> dict[str, list[torch.Tensor]]:
        """Ω of the step for each head of the pair: sample-weighted mean over batches of |∂ mean‖head(x)‖² / ∂θ|."""
        out = {}
        for m, x in zip(ctx.pair, ctx.train):
            if m in out:
                continue
            lin, params = ctx.heads[m], head_params(ctx, m)
            sums = [torch.zeros_like(p) for p in params]
            for idx in batches(ctx, len(x), self.options.importance_batch):
                z = lin(x[idx.to(x.device)])
                grads = torch.autograd.grad(z.pow(2).sum(1).mean(), params)
                for s, g in zip(sums, grads):
                    s.add_(g.abs(), alpha=float(len(idx)))
            out[m] = [s / max(len(x), 1) for s in sums]
        return out

    @torch.no_grad()
    def after_training_exp(self, ctx):
        super().after_training_exp(ctx)
        new = self.importance(ctx)
        for m, om in new.items():
            n_new, n_old = len(ctx.train[0]), self.count.get(m, 0)
            old = self.omega.get(m)
            if old is None:
                self.omega[m] = om
            elif self.options.accumulate == "sum":
                self.omega[m] = [o + w for o, w in zip(old, om)]
            else:
                self.omega[m] = [(n_old * o + n_new * w) / (n_old + n_new) for o, w in zip(old, om)]
            self.count[m] = n_old + n_new
            self.anchor[m] = [p.detach().clone() for p in head_params(ctx, m)]
        self.record(ctx, new)

"""LwF — Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017), adapted to contrastive modality pairs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.devices import host

from . import Method, register
from ._distill import kl_sum


def _kl_rows(new_logits: torch.Tensor, old_logits: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean over rows (dim=1) or columns (dim=0) of KL(softmax(old) || softmax(new)) along ``dim``."""
    return kl_sum(new_logits, old_logits, dim) / new_logits.shape[1 - dim]


@register("lwf")
class LwF(Method):
    """Learning without Forgetting: distil the previous model's in-batch similarity distributions.

    Li & Hoiem, "Learning without Forgetting", ECCV 2016 / IEEE TPAMI 2017. LwF keeps a frozen copy of the
    model from before the step and, on the *new* data only, distils its softened outputs (KL at
    temperature T) into the model being trained. Adaptation to contrastive modality pairs: there are no
    class logits, so what is distilled are the rows of the in-batch similarity matrix, the "logits" InfoNCE
    works with — each row a distribution over the batch, which is invariant to what softmax ignores (a
    shift per row) and cares only about the relative ranking of candidates, i.e. about retrieval. At the
    start of each step the two heads of the pair are copied (frozen, no grad; no old data is kept).
    Term 1 (``cross_modal``) distils the old cross-modal rows and columns,
    ``KL(softmax(old_za old_zbᵀ/T) || softmax(za zbᵀ/T))`` row-wise, in both directions (a→b and b→a).
    Term 1 alone constrains only relations inside the current pair; but a modality m of the pair that an
    earlier step trained also serves its earlier partners, whose data (and embeddings) are gone. Term 2
    (``shared_modalities``) keeps what those pairs relied on, the geometry of m's embedding space, anchored
    at the old embeddings of the current batch: ``KL(softmax(old_zm old_zmᵀ/T) || softmax(zm old_zmᵀ/T))``
    per batch row (old embeddings as the fixed candidates, so a new embedding must stay closest to its own
    old one and keep its rank among the others). Loss = InfoNCE + ``alpha`` · (term 1 + term 2), the terms
    being batch means; on the first step (no previous model) they are zero, and so are they on a step whose
    two heads no earlier step trained: the previous model there is the untrained start, and keeping it
    protects no earlier pair while slowing the new one.

    Options: ``alpha`` (3.0; LwF's λ_o, the weight of the distillation); ``temperature`` (``None``: 4 × the
    loss temperature, i.e. T = 4 on InfoNCE's logits sims/τ — LwF used T = 2 on class logits; in-batch rows
    at τ = 0.05 are nearly one-hot, and 4τ gave a better trade-off than 2τ: docs/results.md); ``cross_modal``
    (true: term 1); ``shared_modalities`` (true: term 2). Embeddings are
    L2-normalised first iff the loss normalises them. No T² factor (Hinton's) is applied; ``alpha``
    absorbs it. The paper's warm-up (training only the new task's head first) has no counterpart here:
    the pair's heads are the shared model.
    """
    family = "distillation"

    defaults = dict(alpha=3.0, temperature=None, cross_modal=True, shared_modalities=True)
    search_space = dict(alpha=[0.3, 1.0, 3.0, 10.0])
    bounds = dict(temperature=(0, None, True))
    types = dict(temperature=float)

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.trained: set[str] = set()       # modalities some finished step trained
        self.steps_done = 0
        self.old: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}   # modality -> frozen (W, b) of this step
        self.shared: tuple[str, ...] = ()    # modalities of the pair trained by an earlier step
        self._sums: torch.Tensor | None = None   # running (term 1, term 2) sums of the step, no grad
        self._batches = 0
        self.log: list[dict] = []

    # -- the distillation ------------------------------------------------------------------------------
    def _temperature(self, ctx) -> float:
        return self.options.temperature if self.options.temperature is not None else 4.0 * ctx.loss_cfg.temperature

    def _old_embed(self, m: str, x: torch.Tensor) -> torch.Tensor:
        w, b = self.old[m]
        return F.linear(x, w, b)

    def distillation(self, ctx) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(term 1, term 2) for the batch in ``ctx`` (``xa``, ``xb``, ``za``, ``zb``); 0.0 if not active."""
        t1: torch.Tensor | float = 0.0
        t2: torch.Tensor | float = 0.0
        if not self.old:
            return t1, t2
        a, b = ctx.pair
        inv_t = 1.0 / self._temperature(ctx)
        norm = ctx.loss_cfg.normalize
        z = {a: ctx.za, b: ctx.zb}
        x = {a: ctx.xa, b: ctx.xb}
        with torch.no_grad():
            old = {m: self._old_embed(m, x[m]) for m in self.old}
            if norm:
                old = {m: F.normalize(v, dim=-1) for m, v in old.items()}
        if norm:
            z = {m: F.normalize(v, dim=-1) for m, v in z.items()}
        if self.options.cross_modal:
            with torch.no_grad():
                target = (old[a] @ old[b].T) * inv_t
            logits = (z[a] @ z[b].T) * inv_t
            t1 = 0.5 * (_kl_rows(logits, target, 1) + _kl_rows(logits, target, 0))
        for m in self.shared:
            with torch.no_grad():
                target = (old[m] @ old[m].T) * inv_t
            t2 = t2 + _kl_rows((z[m] @ old[m].T) * inv_t, target, 1)
        return t1, t2

    # -- hooks -----------------------------------------------------------------------------------------
    def before_training_exp(self, ctx):
        self.old = {}
        self.shared = ()
        self._sums, self._batches = None, 0
        if self.steps_done == 0 or self.options.alpha == 0:
            return                                   # no previous model (or nothing to distil)
        a, b = ctx.pair
        if a not in self.trained and b not in self.trained:
            return                                   # both heads new: nothing learned earlier lives in them
        self.shared = tuple(m for m in dict.fromkeys((a, b)) if m in self.trained) if self.options.shared_modalities else ()
        need = (a, b) if self.options.cross_modal else self.shared
        for m in dict.fromkeys(need):
            lin = ctx.heads[m]
            self.old[m] = (lin.weight.detach().clone(), lin.bias.detach().clone())

    def before_backward(self, ctx):
        if not self.old:
            return
        t1, t2 = self.distillation(ctx)
        ctx.loss = ctx.loss + self.options.alpha * (t1 + t2)
        terms = torch.stack([torch.as_tensor(t, dtype=ctx.loss.dtype, device=ctx.loss.device).detach() for t in (t1, t2)])
        self._sums = terms if self._sums is None else self._sums + terms
        self._batches += 1

    def after_training_exp(self, ctx):
        if self._sums is not None:
            t1, t2 = host(self._sums / self._batches).tolist()
            self.log.append({"step": ctx.step, "term1": t1, "term2": t2, "shared": list(self.shared)})
        self.trained.update(ctx.pair)
        self.steps_done += 1
        self.old = {}
        self._sums = None

    def state_summary(self):
        return {"distillation": self.log}

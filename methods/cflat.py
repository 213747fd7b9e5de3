"""C-Flat — a flatness-aware optimiser wrapper for continual learning (Bian et al., NeurIPS 2024)."""
from __future__ import annotations

import torch

from . import Method, register

VARIANTS = ("paper", "sam-point", "theta")
# Closure evaluations (forward + loss + backward) per optimiser step, by variant.
CLOSURE_CALLS = {"paper": 4, "sam-point": 3, "theta": 2}


class CFlatOptimizer:
    """Wraps the run's optimiser: ``step(closure)`` evaluates the closure ``CLOSURE_CALLS[variant]`` times,
    puts the C-Flat gradient in ``.grad`` at the original parameters θ and calls the base optimiser's step.

    With g(φ) the closure's gradient at φ, n(v) = v / ‖v‖ (one norm over all the wrapped parameters):

    - ``paper`` (4 calls): g0 = g(θ); g1 = g(θ + ρ n(g0)); δ1 = ρ n(g1 − g0); g2 = g(θ + δ1);
      g3 = g(θ + δ1 + ρ n(g2)); update direction g = g1 + λ (g3 − g2).
    - ``sam-point`` (3 calls): the first-order term is taken at the zeroth-order worst point θ + ρ n(g0)
      instead of at θ + δ1: g2 = g(θ + ρ n(g0) + ρ n(g1)); g = g1 + λ (g2 − g1).
    - ``theta`` (2 calls): the first-order term is taken at θ: g = g1 + λ (g1 − g0).

    The parameters are restored to θ exactly (copied back, not subtracted) before the base step. Parameters
    without a gradient at θ are left alone (as the base optimiser would leave them). ``closure_calls`` counts
    every evaluation; ``step`` returns the loss at θ.
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float, lam: float, variant: str = "paper",
                 eps: float = 1e-12):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.base, self.rho, self.lam, self.variant, self.eps = base, float(rho), float(lam), variant, eps
        self.closure_calls = 0
        self.steps = 0
        self._buf: dict[int, dict[str, torch.Tensor]] = {}

    # -- the optimiser interface the trainer and methods use ------------------------------------------
    @property
    def param_groups(self):
        return self.base.param_groups

    @property
    def state(self):
        return self.base.state

    def zero_grad(self, set_to_none: bool = True):
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.base.state_dict()

    def load_state_dict(self, state):
        self.base.load_state_dict(state)

    # -- helpers --------------------------------------------------------------------------------------
    def _eval(self, closure):
        self.closure_calls += 1
        with torch.enable_grad():
            return closure()

    def _save(self, params, key):
        """Copy the current ``.grad`` (or the parameter itself for key 'theta') into a reused buffer."""
        out = []
        for p in params:
            slot = self._buf.setdefault(id(p), {})
            src = p.detach() if key == "theta" else p.grad
            if src is None:
                src = torch.zeros_like(p)
            b = slot.get(key)
            if b is None or b.shape != p.shape:
                b = slot[key] = torch.empty_like(p)
            b.copy_(src)
            out.append(b)
        return out

    def _scale(self, vecs):
        """ρ / ‖vecs‖ (one norm over all parameters), a 0-d tensor on the parameters' device (computed in
        float64 and rounded once, so no value is read on the host mid-step); 0 when ρ = 0."""
        if self.rho == 0.0:
            return 0.0
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in vecs]))
        return (self.rho / (norm.double() + self.eps)).to(norm.dtype)

    @staticmethod
    @torch.no_grad()
    def _move(params, theta, steps):
        """p ← θ + Σ scale·v over (scale, vecs) in ``steps``."""
        for i, p in enumerate(params):
            p.copy_(theta[i])
            for scale, vecs in steps:
                if isinstance(scale, torch.Tensor):
                    p.addcmul_(vecs[i], scale)
                elif scale != 0.0:
                    p.add_(vecs[i], alpha=scale)

    # -- the C-Flat step ------------------------------------------------------------------------------
    def step(self, closure):
        if closure is None:
            raise RuntimeError("C-Flat needs a closure: optimizer.step(closure)")
        loss = self._eval(closure)
        every = [p for g in self.base.param_groups for p in g["params"]]
        params = [p for p in every if p.grad is not None]
        theta = self._save(params, "theta")
        g0 = self._save(params, "g0")
        d0 = (self._scale(g0), g0)
        self._move(params, theta, [d0])
        self._eval(closure)
        g1 = self._save(params, "g1")
        if self.variant == "theta":
            far, near = g1, g0
        elif self.variant == "sam-point":
            self._move(params, theta, [d0, (self._scale(g1), g1)])
            self._eval(closure)
            far, near = self._save(params, "g2"), g1
        else:  # paper
            h = self._save(params, "h")                      # g1 − g0: finite-difference ∝ ∇‖∇L(θ)‖
            for hi, g0i in zip(h, g0):
                hi.sub_(g0i)
            d1 = (self._scale(h), h)
            self._move(params, theta, [d1])
            self._eval(closure)
            g2 = self._save(params, "g2")
            self._move(params, theta, [d1, (self._scale(g2), g2)])
            self._eval(closure)
            far, near = self._save(params, "g3"), g2
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(theta[i])
                g = g1[i].clone()
                if self.lam != 0.0:
                    g.add_(far[i] - near[i], alpha=self.lam)
                p.grad = g
            if len(params) < len(every):
                keep = {id(p) for p in params}
                for p in every:
                    if id(p) not in keep:
                        p.grad = None
        self.base.step()
        self.steps += 1
        return loss


@register("cflat")
class CFlat(Method):
    """C-Flat: flatness-aware optimiser wrapper (SAM ascent + first-order gradient-norm flatness) around Vanilla.

    Ang Bian et al., "Make Continual Learning Stronger via C-Flat", NeurIPS 2024. C-Flat minimises
    L^S_ρ(θ) + λ·R^(1)_ρ(θ): the zeroth-order sharpness loss max_{‖δ‖≤ρ} L(θ+δ) (SAM) plus the first-order
    flatness ρ·max_{‖δ‖≤ρ} ‖∇L(θ+δ)‖ (GAM's term). Its gradient is approximated, as in the paper's
    algorithm and its official optimiser (github.com/WanNaa/C-Flat, checked: four forward-backward passes,
    the same combination), by g1 + λ(g3 − g2): g1 = ∇L(θ + ρ ĝ0) is SAM's gradient; the ascent direction of the gradient norm,
    ∇‖∇L(θ)‖ ∝ H g0, is estimated by the finite difference g1 − g0 and gives δ1 = ρ (g1−g0)/‖g1−g0‖;
    ρ ∇‖∇L(θ+δ1)‖ ≈ g3 − g2 with g2 = ∇L(θ+δ1), g3 = ∇L(θ+δ1+ρ ĝ2). θ is restored and the run's own
    optimiser (AdamW or SGD, with its weight decay) steps with that gradient. Each step evaluates the
    closure (forward, InfoNCE, backward) **4 times** with ``variant=paper``; cheaper variants (options, not
    the paper): ``sam-point`` (3 calls) takes the first-order term at the SAM point θ+ρĝ0 instead of θ+δ1,
    ``theta`` (2 calls) takes it at θ (g = g1 + λ(g1−g0)). ρ=0, λ=0 is the base optimiser exactly.

    Defaults ρ = 0.2, λ = 0.2: the official optimiser's defaults.
    C-Flat is a plug-in the paper combines with many CL methods; here it wraps plain sequential
    fine-tuning (Vanilla), so it adds no memory of old tasks: only a flatter minimum for each step.

    Adaptation to contrastive modality pairs: the perturbations run over the parameters the step trains —
    the current pair's two heads (W and b), with one norm over all four tensors — and the loss the closure
    recomputes is the step's InfoNCE on its modality pair; nothing else changes.
    """
    family = "optimiser"

    uses_closure = True
    defaults = dict(rho=0.2, lam=0.2, variant="paper")
    search_space = dict(rho=[0.005, 0.01, 0.02, 0.05, 0.2])
    choices = dict(variant=VARIANTS)

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.closure_calls = 0
        self.steps = 0
        self._opt: CFlatOptimizer | None = None

    def wrap_optimizer(self, optimizer, ctx):
        self._collect()
        self._opt = CFlatOptimizer(optimizer, self.options.rho, self.options.lam, self.options.variant)
        return self._opt

    def _collect(self):
        if self._opt is not None:
            self.closure_calls += self._opt.closure_calls
            self.steps += self._opt.steps
            self._opt = None

    def after_training_exp(self, ctx):
        self._collect()

    def state_summary(self):
        return {"closure_calls_per_step": CLOSURE_CALLS[self.options.variant], "closure_calls": self.closure_calls,
                "optimizer_steps": self.steps}

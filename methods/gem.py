import numpy as np
import torch

from bench.devices import host

from . import Method, register
from ._buffer import HEADS, ReplayMixin
from ._projection import PROJECT


def gem_project(g: torch.Tensor, refs: torch.Tensor, margin: float = 0.0, eps: float = 1e-6) -> torch.Tensor:
    """GEM's projection of a flat gradient ``g`` (P,) onto the cone ``{z : refs @ z ≥ 0}`` (refs: K×P, one
    reference gradient per past task), through the dual QP of Lopez-Paz & Ranzato (2017):

        min_v ½ vᵀ (R Rᵀ) v + (R g)ᵀ v   s.t.  v ≥ margin,      then   g̃ = g + Rᵀ v.

    With ``margin = 0``, ``g̃`` is the point of the cone closest to ``g``; a positive ``margin`` (the paper's
    "memory strength" γ) pushes it further inside (the KKT conditions give ``R g̃ ≥ 0`` for any margin).
    ``eps`` times the mean diagonal of R Rᵀ is added to its diagonal so that the QP stays strictly convex when
    reference gradients are collinear (constraints then hold up to about ``eps·‖R‖²·v``). Solved in float64
    with quadprog (``min ½xᵀGx − aᵀx s.t. Cᵀx ≥ b``)."""
    import quadprog
    r64 = host(refs).double()
    gram = r64 @ r64.T
    k = gram.shape[0]
    ridge = eps * float(gram.diagonal().mean()) + 1e-30
    gram = 0.5 * (gram + gram.T) + ridge * torch.eye(k, dtype=gram.dtype)
    rg = r64 @ host(g).double()
    v = quadprog.solve_qp(gram.numpy(), -rg.numpy(), np.eye(k), np.full(k, float(margin)))[0]
    return g + (torch.from_numpy(v) @ r64).to(g)


@register("gem")
class GEM(ReplayMixin, Method):
    """GEM: keep the InfoNCE of every past pair's episodic memory from increasing, by a QP on the gradient.

    Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017. Each past task k
    keeps an episodic memory; each iteration computes one reference gradient g_k per past task on its whole
    memory, and if the current gradient g violates any constraint ⟨g, g_k⟩ ≥ 0 it is replaced by the closest
    gradient satisfying all of them, found through the dual QP (solved with quadprog). Adaptation to
    contrastive modality pairs: a "task" is one step, i.e. one modality pair of one source; its memory is
    ``memory_per_step`` random training pairs ``(x_a, x_b)`` of that step, kept when the step ends, and g_k is
    the gradient of the InfoNCE over that memory alone (never mixing pairs) through the pair's two heads.
    Gradients are flat vectors over the heads in play: ``heads = pair`` (default), the step's two heads, with
    one constraint per past pair sharing a modality with the step (the others' memory losses cannot change);
    ``heads = all``, every head of a past pair too, all trainable. ``margin`` is the paper's memory strength γ
    (v ≥ γ in the dual). Its experiments use 0.5, but here γ > 0 adds γ·Σ g_k to every projected gradient,
    i.e. trains the heads on the small memories, which overfits them; the default is 0, the exact
    projection (measurements: docs/results.md). ``eps``: a ridge on the QP, relative to the Gram matrix's mean diagonal.
    ``ref_batch`` (0: the whole memory, the paper's) caps the memory pairs each reference gradient uses,
    drawn afresh each iteration: cheaper, weaker. ``project = gradient`` (the paper's) projects
    the raw gradient before the optimiser, which guarantees the constraints for plain SGD only (AdamW
    rescales the coordinates; with ``heads = all`` the small QP term on an old head becomes a full-size
    step); ``project = update`` (default) projects the
    optimiser's actual step ``θ_old − θ_new``, expressed in gradient units (rescaled to the raw gradient's
    norm) so that ``margin`` keeps its meaning. Cost: one forward/backward over each constraining memory per
    iteration (the embeddings through a head not in play are computed once per step), so GEM is several times
    slower per iteration than Vanilla late in the stream. The run file records how often the QP was solved
    (``qp_solves``, per step in ``per_step``). ``seed`` (None: the run's seed) seeds the memories' draws.
    """
    family = "replay"

    defaults = dict(memory_per_step=256, margin=0.0, eps=1e-6, ref_batch=0, heads="pair", project="update",
                    seed=None)
    search_space = dict(margin=[0.0, 0.5])
    bounds = dict(memory_per_step=(1, None, False))
    types = dict(seed=int)
    choices = dict(heads=HEADS, project=PROJECT)

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self._init_replay("per_step", 0, self.options.memory_per_step)
        self.iterations = 0
        self.qp_solves = 0
        self.per_step = []

    def before_training_exp(self, ctx):
        self._start_step(ctx)
        self._refs = None
        if self._eligible and self._g is not None:
            self._refs = torch.zeros(len(self._eligible), len(self._g), device=self._g.device)
            self._old = torch.zeros_like(self._g)
            # per constraint: the memory's task, its pair, its heads in play, and the
            # memory's embeddings through a head not in play (fixed for the whole step: computed once)
            self._ref_slots = []
            with torch.no_grad():
                for t in self._eligible:
                    (a, b), (xa, xb) = self.replay_buffer.pairs[t], self.replay_buffer.task_rows(t)
                    mods = [m for m in (a, b) if m in self._slices]
                    fixed = [None if m in self._slices else ctx.heads[m](x) for m, x in ((a, xa), (b, xb))]
                    self._ref_slots.append((t, a, b, mods, fixed))
        self.per_step.append({"step": ctx.step, "constraints": len(self._eligible or []), "iterations": 0,
                              "qp_solves": 0})

    def _reference_gradients(self, ctx) -> torch.Tensor:
        """Row k: the gradient of past pair k's memory InfoNCE, in place in the preallocated K×P matrix (the
        columns of heads outside pair k stay zero). Written out, not through autograd: through a linear head,
        dW = dzᵀ x and db = Σ dz, with dz the loss's gradient on the embeddings (``embedding_grads``)."""
        from bench.loss import embedding_grads
        refs, n = self._refs, int(self.options.ref_batch)
        with torch.no_grad():
            for k, (t, a, b, mods, fixed) in enumerate(self._ref_slots):
                xa, xb = self.replay_buffer.task_rows(t)
                idx = None
                if 0 < n < len(xa):
                    idx = torch.randperm(len(xa), generator=self._gen)[:n].to(xa.device)
                xs, zs = [], []
                for m, x, f in ((a, xa, fixed[0]), (b, xb, fixed[1])):
                    src = f if f is not None else x
                    src = src if idx is None else src[idx]
                    xs.append(src)
                    zs.append(src if f is not None else ctx.heads[m](src))
                dz = embedding_grads(zs[0], zs[1], ctx.loss_cfg)
                refs[k].zero_()
                for m, x, d in zip((a, b), xs, dz):
                    if m in mods:
                        self._add_head_gradient(refs[k], ctx.heads[m], m, x, d)
        return refs

    def _solved(self):
        self.qp_solves += 1
        self.per_step[-1]["qp_solves"] += 1

    def after_backward(self, ctx):
        if self._refs is None:
            return
        self.iterations += 1
        self.per_step[-1]["iterations"] += 1
        refs = self._reference_gradients(ctx)
        g = self._grads_to_flat(self._g)
        if self.options.project == "gradient":
            if bool(host((refs @ g < 0).any())):
                self._solved()
                self._flat_to_grads(gem_project(g, refs, self.options.margin, self.options.eps))
        else:
            self._gnorm = float(host(g.norm()))

    def before_update(self, ctx):
        if self.options.project == "update" and self._refs is not None:
            self._params_to_flat(self._old)

    def after_update(self, ctx):
        if self.options.project == "update" and self._refs is not None:
            d = self._old - self._params_to_flat(self._g)       # the step taken, as a descent direction
            if bool(host((self._refs @ d < 0).any())):
                self._solved()
                c = float(host(d.norm())) / max(self._gnorm, 1e-30)     # step size per unit of gradient
                if c > 0:
                    d = gem_project(d / c, self._refs, self.options.margin, self.options.eps) * c
                self._flat_to_params(self._old.sub_(d))

    def state_summary(self):
        return dict(self.buffer_summary(), iterations=self.iterations, qp_solves=self.qp_solves,
                    per_step=self.per_step)

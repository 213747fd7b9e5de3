import torch

from bench.devices import host

from . import Method, register
from ._buffer import HEADS, POLICIES, ReplayMixin
from ._projection import PROJECT


def agem_project(g: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A-GEM's rule on flat vectors, in place: if ``g·ref < 0``, ``g ← g − (g·ref / ref·ref) ref``.
    Returns ``(g, projected)``."""
    dot = torch.dot(g, ref)
    if host(dot) >= 0:
        return g, False
    g.sub_(ref, alpha=float(host(dot / torch.dot(ref, ref).clamp_min(1e-30))))
    return g, True


@register("agem")
class AGEM(ReplayMixin, Method):
    """A-GEM: project the gradient so it does not increase the InfoNCE of a replayed batch of old pairs.

    Chaudhry, Ranzato, Rohrbach & Elhoseiny, "Efficient Lifelong Learning with A-GEM", ICLR 2019. Each
    iteration, after the backward of the current loss, a reference gradient ``g_ref`` is computed on a batch
    drawn from the episodic memory of all past tasks; if ``g·g_ref < 0`` the gradient becomes
    ``g − (g·g_ref / g_ref·g_ref) g_ref``. Adaptation to contrastive modality pairs: a "task" is one step,
    i.e. one modality pair of one source; the memory keeps copies of training pairs ``(x_a, x_b)`` of past
    steps (``buffer = per_step``, the paper's episodic memory: ``memory_per_step`` random pairs per step, the
    same memory as ``gem``; or ``reservoir``, ``buffer_size`` pairs in total). The reference batch
    (``replay_batch`` pairs, drawn uniformly, or from ``groups`` pairs as in ``er``) is grouped by pair and its
    loss is the group-size-weighted mean of per-group InfoNCEs, so no InfoNCE mixes pairs. ``g`` and
    ``g_ref`` are flat vectors over the heads in play: ``heads = pair`` (default), the step's two heads, with
    only the buffered pairs sharing one of them in the reference batch (the others' losses cannot change);
    ``heads = all``, every head of a buffered pair too, all trainable, so the projection can move an old
    head the current loss does not touch. ``g_ref`` is the reference loss's gradient, written out
    (``ReplayMixin._replay_gradient``, checked against autograd in the tests), in ``after_backward``; ``g`` is
    read into a preallocated flat vector.
    ``project = gradient`` (the paper's) projects the raw gradient before the optimiser, which guarantees
    ``step·g_ref ≥ 0`` for plain SGD only: AdamW rescales every coordinate, and with ``heads = all`` an old
    head that receives only the small projection term moves by about lr per step like any other; ``project =
    update`` (default) applies the rule to
    the optimiser's actual step ``θ_old − θ_new`` after it is taken, as ``dns`` does. ``replay_batch``
    defaults to 1024, about the whole memory of the pairs that share a head with a step: the single averaged
    constraint is weak, and weaker with a noisier reference (measurements: docs/results.md). ``seed`` (None: the
    run's seed) seeds the memory's draws and the reference
    batches.
    """
    family = "replay"

    defaults = dict(buffer="per_step", memory_per_step=256, buffer_size=2500, replay_batch=1024, groups=0,
                    heads="pair", project="update", seed=None)
    bounds = dict(replay_batch=(1, None, False))
    types = dict(seed=int)
    choices = dict(buffer=POLICIES, heads=HEADS, project=PROJECT)

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self._init_replay(self.options.buffer, self.options.buffer_size, self.options.memory_per_step)
        self.iterations = 0
        self.projected = 0

    def before_training_exp(self, ctx):
        self._start_step(ctx)
        self._ref = torch.zeros_like(self._g) if self._g is not None else None
        self._old = torch.zeros_like(self._g) if self._g is not None else None
        self._have_ref = False

    def after_backward(self, ctx):
        self._have_ref = False
        if not self._eligible:
            return
        groups = self.replay_buffer.sample(int(self.options.replay_batch), self._gen, int(self.options.groups), self._eligible)
        if not groups:
            return
        self.iterations += 1
        self._replay_gradient(ctx.heads, groups, ctx.loss_cfg, self._ref)
        self._have_ref = True
        if self.options.project == "gradient":
            g, projected = agem_project(self._grads_to_flat(self._g), self._ref)
            if projected:
                self.projected += 1
                self._flat_to_grads(g)

    def before_update(self, ctx):
        if self.options.project == "update" and self._have_ref:
            self._params_to_flat(self._old)

    def after_update(self, ctx):
        if self.options.project == "update" and self._have_ref:
            d = self._old - self._params_to_flat(self._g)       # the step taken, as a descent direction
            d, projected = agem_project(d, self._ref)
            if projected:
                self.projected += 1
                self._flat_to_params(self._old.sub_(d))

    def state_summary(self):
        return dict(self.buffer_summary(), iterations_with_reference=self.iterations,
                    projected_iterations=self.projected)

from . import Method, register
from ._buffer import HEADS, POLICIES, ReplayMixin, group_loss


@register("er")
class ER(ReplayMixin, Method):
    """Experience replay: each batch also pays the InfoNCE of a replayed batch of old pairs from a small buffer.

    Chaudhry, Rohrbach, Elhoseiny, Ajanthan, Dokania, Torr & Ranzato, "On Tiny Episodic Memories in Continual
    Learning", arXiv 1902.10486, 2019 (ER with a reservoir-sampled memory). Adaptation to contrastive modality
    pairs: a "task" is one step, i.e. one modality pair of one source; the buffer keeps copies of training
    pairs ``(x_a, x_b)`` of earlier steps, offered to it when each step ends (``buffer = reservoir``: a uniform
    sample of every pair seen so far, ``buffer_size`` pairs in total — fixed in advance, since the number of
    steps is not known; or ``per_step``: ``memory_per_step``
    random pairs of each step). Each iteration draws ``replay_batch`` pairs from the buffer (``groups = 0``:
    uniformly; ``groups = k``: from ``k`` buffered pairs drawn in proportion to their share, which gives each
    InfoNCE more negatives) and groups them by pair; the InfoNCE is computed within each group (never across
    pairs; groups of one are dropped), averaged weighted by group size, times ``weight`` (1: the paper's plain
    sum of current and replay losses), and added to the step's loss. ``heads = pair`` (default) trains the
    step's two heads only, replaying the buffered pairs that share a modality with the step; ``heads = all``
    (the paper's "whole model") also trains every other head of a buffered pair on the replay loss alone:
    such a head sees only the few hundred stored pairs of its tasks, which AdamW follows at full step size
    for the rest of the stream, and overfits them (measurements: docs/results.md). ``seed`` (None: the run's seed)
    seeds the buffer's decisions and the
    replay draws.
    """
    family = "replay"

    defaults = dict(buffer="reservoir", buffer_size=2500, memory_per_step=256, replay_batch=64, groups=0,
                    weight=1.0, heads="pair", seed=None)
    search_space = dict(weight=[0.25, 0.5, 1.0, 2.0])
    bounds = dict(replay_batch=(1, None, False))
    types = dict(seed=int)
    choices = dict(buffer=POLICIES, heads=HEADS)

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self._init_replay(self.options.buffer, self.options.buffer_size, self.options.memory_per_step)
        self.replayed = 0

    def before_training_exp(self, ctx):
        self._start_step(ctx)

    def before_backward(self, ctx):
        if not self._eligible:
            return
        groups = self.replay_buffer.sample(int(self.options.replay_batch), self._gen, int(self.options.groups), self._eligible)
        if groups:
            ctx.loss = ctx.loss + self.options.weight * group_loss(ctx.heads, groups, ctx.loss_cfg, self.in_play)
            self.replayed += 1

    def state_summary(self):
        return dict(self.buffer_summary(), replayed_iterations=self.replayed)

"""DER — Dark Experience Replay (Buzzega et al., NeurIPS 2020), adapted to contrastive modality pairs."""
from __future__ import annotations

import torch

from bench.devices import host
from bench.loss import info_nce

from . import Method, register
from ._buffer import HEADS, POLICIES, ReplayMixin, embed


def split_rows(groups, width: dict[str, int]):
    """DER's buffer rows are ``[features | stored embedding]``: split each ``(task, pair, xa, xb)`` group into
    ``(task, pair, xa, xb, za_stored, zb_stored)`` (views, no copy)."""
    out = []
    for t, (a, b), xa, xb in groups:
        wa, wb = width[a], width[b]
        out.append((t, (a, b), xa[:, :wa], xb[:, :wb], xa[:, wa:], xb[:, wb:]))
    return out


@register("der")
class DER(ReplayMixin, Method):
    """Dark Experience Replay: distil the embeddings the heads gave buffered old pairs when they were stored.

    Buzzega, Boschini, Porrello, Abati & Calderara, "Dark Experience for General Continual Learning: a Strong,
    Simple Baseline", NeurIPS 2020. DER keeps a reservoir buffer of past inputs together with the network's
    outputs (logits) for them at the time they entered the buffer, and adds ``α · ||h_θ(x) − z||²`` on a
    minibatch drawn from it (DER++ also replays their labels; ``derpp``). Adaptation to contrastive modality
    pairs: in-batch InfoNCE logits depend on the rest of the batch, so they cannot be stored; the
    batch-independent outputs of the model are the two embeddings of a pair, ``z_a = W^a x_a + b^a`` and
    ``z_b = W^b x_b + b^b``. The buffer (the shared pair buffer, Algorithm R over every pair seen:
    ``buffer = reservoir``, ``buffer_size`` pairs in total, as in the paper; or ``per_step``) keeps for each
    pair its features and these two embeddings, computed with the step's final heads when the step ends —
    the moment a pair can enter the buffer here (the buffer is filled from the step's training matrices at
    the end of the step; DER inserts during the task, with that iteration's logits, which for a pair offered
    at the end of its step are the final ones). Each iteration draws ``replay_batch`` buffered pairs
    (uniformly, or from ``groups`` pairs as in ``er``), grouped by modality pair (groups of one pair are kept:
    the term needs no negatives); the term is ``alpha`` × the squared distance ``||z − z_stored||²`` between
    the current heads' embeddings and the stored ones, summed over the embedding's coordinates (the paper's
    squared L2 norm; the authors' code averages over the logits instead, which here would tie ``alpha`` to the
    width d), averaged over the two sides and over every replayed pair. ``alpha = 3``: the paper's α (0.1–1 on class
    logits) barely acts on these embeddings (the sweep behind the default: docs/results.md). ``heads = pair``
    (default, as ``er``) trains the step's two heads
    only and replays the buffered pairs sharing a modality with the step (the embedding of the other side is
    then a constant, computed without a graph); ``heads = all`` also trains every head of a buffered pair on
    the replay term alone: such a head sees only the few hundred stored pairs of its tasks, with AdamW's
    full-size steps, and overfits them (``er`` does the same way). ``seed`` (None: the run's seed) seeds
    the buffer's decisions and the draws (the same buffer contents as ``er``).
    """
    family = "replay"

    defaults = dict(alpha=3.0, buffer="reservoir", buffer_size=2500, memory_per_step=256, replay_batch=64,
                    groups=0, heads="pair", seed=None)
    search_space = dict(alpha=[1.0, 3.0, 10.0])
    bounds = dict(replay_batch=(1, None, False))
    types = dict(seed=int)
    choices = dict(buffer=POLICIES, heads=HEADS)

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self._init_replay(self.options.buffer, self.options.buffer_size, self.options.memory_per_step)
        self.width: dict[str, int] = {}       # modality -> feature width (where a stored row's embedding starts)
        self.replayed = 0
        self._sums: torch.Tensor | None = None
        self._batches = 0
        self.log: list[dict] = []

    # -- the terms -------------------------------------------------------------------------------------
    def draw(self, min_group: int = 1):
        """A replay batch from the eligible buffered pairs, split into features and stored embeddings."""
        if not self._eligible:
            return []
        groups = self.replay_buffer.sample(int(self.options.replay_batch), self._gen, int(self.options.groups), self._eligible,
                                           min_group=min_group)
        return split_rows(groups, self.width)

    def logit_term(self, heads, groups) -> torch.Tensor:
        """DER's term without α: the squared distance between current and stored embeddings, summed over
        the embedding's coordinates, averaged over the two sides and over every replayed pair (i.e. over
        groups weighted by size)."""
        total: torch.Tensor | float = 0.0
        n = 0
        for _, (a, b), xa, xb, za_old, zb_old in groups:
            k = len(xa)
            err = (embed(heads, a, xa, self.in_play) - za_old).pow(2).sum() \
                + (embed(heads, b, xb, self.in_play) - zb_old).pow(2).sum()
            total = total + 0.5 * err
            n += k
        return torch.as_tensor(total) / n

    def replay_infonce(self, heads, groups, loss_cfg) -> torch.Tensor | float:
        """InfoNCE of replayed groups, per group (never across pairs), averaged weighted by group size."""
        total: torch.Tensor | float = 0.0
        n = 0
        for _, (a, b), xa, xb, *_ in groups:
            if len(xa) < 2:
                continue
            k = len(xa)
            total = total + k * info_nce(embed(heads, a, xa, self.in_play), embed(heads, b, xb, self.in_play),
                                         loss_cfg)
            n += k
        return total / n if n else 0.0

    def replay_terms(self, ctx) -> list:
        """The (unweighted) terms of this batch, as tensors; ``[]`` when nothing is replayed."""
        groups = self.draw()
        return [self.logit_term(ctx.heads, groups)] if groups else []

    def weights(self) -> tuple[float, ...]:
        return (float(self.options.alpha),)

    # -- hooks -----------------------------------------------------------------------------------------
    def before_training_exp(self, ctx):
        self._start_step(ctx)
        self._sums, self._batches = None, 0

    def before_backward(self, ctx):
        if not self._eligible:
            return
        terms = self.replay_terms(ctx)
        if not terms:
            return
        for w, t in zip(self.weights(), terms):
            ctx.loss = ctx.loss + w * t
        values = torch.stack([torch.as_tensor(t, dtype=ctx.loss.dtype, device=ctx.loss.device).detach() for t in terms])
        self._sums = values if self._sums is None else self._sums + values
        self._batches += 1
        self.replayed += 1

    @torch.no_grad()
    def after_training_exp(self, ctx):
        """Offer the step's pairs to the buffer together with the step's final embeddings of them."""
        xa, xb = ctx.train
        a, b = ctx.pair
        self.width[a], self.width[b] = xa.shape[1], xb.shape[1]
        rows_a = torch.cat([xa, ctx.heads[a](xa)], 1)
        rows_b = torch.cat([xb, ctx.heads[b](xb)], 1)
        self.replay_buffer.add_step(ctx.step, ctx.pair, rows_a, rows_b,
                                    ctx.rng("buffer", salt=1, seed=self.options.seed))
        if self._sums is not None:
            means = host(self._sums / self._batches).tolist()
            self.log.append({"step": ctx.step, **dict(zip(self.term_names, means))})
        self._sums = None

    term_names: tuple[str, ...] = ("embedding_distance",)

    def state_summary(self):
        return dict(self.buffer_summary(), replayed_iterations=self.replayed, terms=self.log)

"""Co2L — Contrastive Continual Learning (Cha, Lee & Shin, ICCV 2021), adapted to contrastive modality pairs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.devices import host
from bench.loss import info_nce

from . import Method, register
from ._buffer import HEADS, POLICIES, ReplayMixin, embed
from ._distill import kl_sum

RELATIONS = ("views", "cross")

_eyes: dict[tuple[int, torch.device], torch.Tensor] = {}


def _eye(n: int, device) -> torch.Tensor:
    key = (n, torch.device(device))
    e = _eyes.get(key)
    if e is None:
        e = _eyes[key] = torch.eye(n, dtype=torch.bool, device=device)
    return e


def asymmetric_info_nce(za, zb, neg_a, neg_b, cfg) -> torch.Tensor:
    """InfoNCE whose anchors are the current pairs only (rows of ``za``, ``zb``); ``neg_a`` / ``neg_b`` (buffered
    pairs of the SAME modality pair, or None) are extra candidates: negatives of every anchor, never anchors.
    a→b: ``za`` against ``[zb; neg_b]``; b→a: ``zb`` against ``[za; neg_a]``; ``cfg`` as ``info_nce``
    (temperature, direction, normalisation). Without negatives it is ``info_nce(za, zb, cfg)``."""
    if neg_a is None or len(neg_a) == 0:
        return info_nce(za, zb, cfg)
    if cfg.normalize:
        za, zb, neg_a, neg_b = (F.normalize(z, dim=-1) for z in (za, zb, neg_a, neg_b))
    labels = torch.arange(len(za), device=za.device)
    loss = F.cross_entropy(za @ torch.cat([zb, neg_b]).T / cfg.temperature, labels)
    if cfg.direction == "both":
        loss = 0.5 * (loss + F.cross_entropy(zb @ torch.cat([za, neg_a]).T / cfg.temperature, labels))
    return loss


def _block_mask(sizes, device) -> torch.Tensor | None:
    """True between rows of different groups (consecutive blocks of the given sizes); None for one group."""
    if len(sizes) < 2:
        return None
    ids = torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                  torch.as_tensor(sizes, device=device), output_size=int(sum(sizes)))
    return ids[:, None] != ids[None, :]


def relation_distillation(za, zb, old_za, old_zb, kappa: float, kappa_star: float, relation: str = "cross",
                          normalize: bool = True, sizes=None) -> tuple[torch.Tensor, int]:
    """Co2L's IRD over groups of pairs: ``(sum over rows of the KL, number of rows)``.

    Rows ``i`` of ``za``/``zb`` (current embeddings) and ``old_za``/``old_zb`` (the previous model's) are
    pairs; ``sizes`` cuts them into consecutive groups, each of ONE modality pair (None: one group), and a
    relation only ever involves two samples of the same group (the others are masked out: one matrix
    product for every group, no pair is mixed). ``cross``: the cross-modal rows ``z_a,i · z_b,j`` and columns
    (b→a) — the in-batch alignment scores, positive included. ``views``: the 2n embeddings ``[z_a; z_b]``
    of a group play Co2L's 2N augmented views; each embedding's row holds its similarities to the 2n − 1
    others (self excluded). Per row, ``p(i; κ) = softmax_j(s_ij / κ)`` and the term is
    ``Σ_i KL(p_past(i; κ*) || p_cur(i; κ))``. ``normalize``: cosine similarities (Co2L's features are on the
    unit sphere; κ and κ* are meant for them)."""
    sizes = [len(za)] if sizes is None else list(sizes)
    if normalize:
        za, zb = F.normalize(za, dim=-1), F.normalize(zb, dim=-1)
        with torch.no_grad():
            old_za, old_zb = F.normalize(old_za, dim=-1), F.normalize(old_zb, dim=-1)
    if relation == "views":
        z = torch.cat([za, zb])
        with torch.no_grad():
            old = torch.cat([old_za, old_zb])
            target = (old @ old.T) / kappa_star
        mask = _block_mask(sizes + sizes, z.device)
        eye = _eye(len(z), z.device)
        mask = eye if mask is None else mask | eye
        return kl_sum((z @ z.T) / kappa, target, mask=mask), len(z)
    with torch.no_grad():
        target = (old_za @ old_zb.T) * (1.0 / kappa_star)
        target = torch.cat([target, target.T])          # rows a→b, then columns b→a as rows
    logits = (za @ zb.T) * (1.0 / kappa)
    mask = _block_mask(sizes, za.device)                # symmetric
    return kl_sum(torch.cat([logits, logits.T]), target, mask=None if mask is None else torch.cat([mask, mask])), 2 * len(za)


@register("co2l")
class Co2L(ReplayMixin, Method):
    """Co2L: asymmetric contrastive loss with buffered negatives plus instance-wise relation distillation.

    Cha, Lee & Shin, "Co2L: Contrastive Continual Learning", ICCV 2021. Co2L trains the representation with an
    asymmetric supervised contrastive loss — only current-task samples are anchors; buffered samples of past
    tasks, mixed into the batch, serve as negatives — and preserves it with instance-wise relation
    distillation (IRD): for each sample of the batch, the softmax over its similarities to the other samples
    under the model of the end of the previous task (temperature κ*) is the target of the current model's
    (temperature κ): ``λ · Σ_i −p(x_i; θ_past, κ*) · log p(x_i; θ, κ)`` (equal, up to the target's constant
    entropy, to the KL computed here). Adaptation to contrastive modality pairs: the two modalities of a pair
    play Co2L's two augmented views of an instance, so the contrastive loss is the pair's InfoNCE; a replay
    batch of ``replay_batch`` buffered pairs (the shared pair buffer: ``buffer = reservoir``, ``buffer_size``
    pairs; Co2L used a small class-balanced buffer) is drawn per iteration and grouped by modality pair,
    never mixed. Groups of the current step's modality pair (an earlier source of the same pair, e.g. ESC-50
    text–audio when training Clotho text–audio; a buffered ``(b, a)`` step is turned round) are appended to
    the batch as extra negatives only (``negatives``): the current pairs are the only anchors, a buffered
    embedding is one more candidate in the other direction's rows. IRD (``ird``, the paper's λ; from the
    second step on, against a frozen copy of the heads in play made when the step starts) runs on the
    current batch together with its same-pair buffered pairs (Co2L distils over the whole batch, buffer
    included) and on each other replayed group (pairs sharing a modality with the step: the relations of an
    old pair that a shared head can disturb); a relation never joins two groups (one masked matrix product),
    and the KL is averaged over every row of every group. ``relation = cross`` (default): the relation rows
    are the cross-modal similarities ``z_a,i · z_b,j`` (and the columns, b→a) — the in-batch alignment scores
    that retrieval ranks, the counterpart of Co2L's similarity of a sample to the others; ``views``: the
    literal reading, all 2n embeddings of a group as Co2L's 2N views, each row its similarities to the
    2n − 1 others (self excluded), which also distils within-modality relations. As in Co2L,
    buffered pairs of other modality pairs are never anchors (their InfoNCE is not trained);
    ``replay_anchors = true`` adds their per-group InfoNCE (``er``'s replay).
    With κ* < κ (the paper's) the term is not zero at the snapshot: it pulls the current relations towards a
    sharper copy of the past ones (so a large λ hurts); with κ* = κ it is
    zero there and a pure preservation term. Paper values (its experimental setup and code; not re-checked
    against the text here): κ = 0.2 (``current_temp``), κ* = 0.01 (``past_temp``),
    λ = 1 (dataset-dependent in its scripts); ``normalize`` (true) computes cosine similarities, Co2L's
    features being on the unit sphere. ``heads = pair`` (default, as ``er``) trains the step's two heads;
    ``all`` also trains every head of a buffered pair, on the distillation alone (far worse on sim-paper;
    measurements of these choices: docs/results.md). ``seed`` (None: the run's seed) seeds the buffer and the draws.
    """
    family = "distillation"

    defaults = dict(ird=1.0, current_temp=0.2, past_temp=0.01, relation="cross", normalize=True, negatives=True,
                    replay_anchors=False, buffer="reservoir", buffer_size=2500, memory_per_step=256,
                    replay_batch=64, groups=0, heads="pair", seed=None)
    search_space = dict(ird=[0.1, 0.3, 1.0, 3.0])
    bounds = dict(replay_batch=(1, None, False), current_temp=(0, None, True), past_temp=(0, None, True))
    types = dict(seed=int)
    choices = dict(buffer=POLICIES, heads=HEADS, relation=RELATIONS)

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self._init_replay(self.options.buffer, self.options.buffer_size, self.options.memory_per_step)
        self.old: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}   # modality -> frozen (W, b) at step start
        self.steps_done = 0
        self.last_negative_tasks: list[int] = []   # tasks whose buffered pairs were the last batch's negatives
        self._sums: torch.Tensor | None = None     # (contrastive, ird) sums of the step, no grad
        self._batches = 0
        self.history: list[dict] = []              # per step: mean contrastive loss, mean IRD, coefficient

    # -- pieces ----------------------------------------------------------------------------------------
    def coefficient(self) -> float:
        """The IRD weight of the current step (Co2L: the fixed λ)."""
        return float(self.options.ird)

    def split_replay(self, groups, pair):
        """``(same, others)``: the replayed groups of the current modality pair, oriented as ``pair`` (a
        buffered ``(b, a)`` step is swapped), and those of every other pair."""
        a, b = pair
        same, others = [], []
        for t, p, xa, xb in groups:
            if p == (a, b):
                same.append((t, xa, xb))
            elif p == (b, a):
                same.append((t, xb, xa))
            else:
                others.append((t, p, xa, xb))
        return same, others

    def losses(self, ctx, groups) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | float | None]:
        """(contrastive, IRD, replayed InfoNCE) for the batch in ``ctx`` and a replay draw ``groups``; IRD is
        None before the second step (or with a zero weight), the replayed InfoNCE None unless
        ``replay_anchors``."""
        a, b = ctx.pair
        same, others = self.split_replay(groups, (a, b)) if groups else ([], [])
        if not self.options.negatives:
            same = []
        self.last_negative_tasks = [t for t, *_ in same]
        za, zb, xa, xb = ctx.za, ctx.zb, ctx.xa, ctx.xb
        contrastive = ctx.loss
        if same:                                     # buffered pairs of this modality pair: negatives only
            bxa, bxb = torch.cat([g[1] for g in same]), torch.cat([g[2] for g in same])
            neg_a, neg_b = embed(ctx.heads, a, bxa, self.in_play), embed(ctx.heads, b, bxb, self.in_play)
            contrastive = asymmetric_info_nce(za, zb, neg_a, neg_b, ctx.loss_cfg)
            xa, xb, za, zb = torch.cat([xa, bxa]), torch.cat([xb, bxb]), torch.cat([za, neg_a]), torch.cat([zb, neg_b])
        distil = bool(self.old) and self._lambda != 0
        ird = replay = None
        if distil:                                   # the current batch, with its same-pair buffered pairs
            (_, old_a), (_, old_b) = self._embeddings(ctx.heads, a, xa, za), self._embeddings(ctx.heads, b, xb, zb)
            parts = [(za, zb, old_a, old_b)]
        nce: torch.Tensor | float = 0.0
        n = 0
        if distil or self.options.replay_anchors:
            for _, (c, d), gxa, gxb in others:       # every other replayed pair, on its own
                (gza, old_a), (gzb, old_b) = self._embeddings(ctx.heads, c, gxa), self._embeddings(ctx.heads, d, gxb)
                if distil:
                    parts.append((gza, gzb, old_a, old_b))
                if self.options.replay_anchors:
                    nce, n = nce + len(gxa) * info_nce(gza, gzb, ctx.loss_cfg), n + len(gxa)
        if distil:
            za_, zb_, old_a_, old_b_ = (torch.cat(z) if len(parts) > 1 else z[0] for z in zip(*parts))
            o = self.options
            kl, rows = relation_distillation(za_, zb_, old_a_, old_b_, o.current_temp, o.past_temp, o.relation,
                                             o.normalize, sizes=[len(p[0]) for p in parts])
            ird = kl / rows
        if n:
            replay = nce / n
        return contrastive, ird, replay

    def _embeddings(self, heads, m: str, x: torch.Tensor, cur: torch.Tensor | None = None):
        """(current, past) embeddings of ``x`` by head ``m`` (``cur``: the current one, if already computed). A
        head without a snapshot did not move this step (not in play): its current output, computed without a
        graph, is also the past one."""
        if cur is None:
            cur = embed(heads, m, x, self.in_play)
        if m not in self.old:
            return cur, cur.detach()
        w, b = self.old[m]
        with torch.no_grad():
            return cur, F.linear(x, w, b)

    # -- hooks -----------------------------------------------------------------------------------------
    def before_training_exp(self, ctx):
        self._start_step(ctx)
        self.old = {}
        if self.steps_done > 0:                      # Co2L distils from the second task on
            for m in self.in_play:
                lin = ctx.heads[m]
                self.old[m] = (lin.weight.detach().clone(), lin.bias.detach().clone())
        self._lambda = self.coefficient()
        self._sums, self._batches = None, 0

    def before_backward(self, ctx):
        groups = []
        if self._eligible:
            groups = self.replay_buffer.sample(int(self.options.replay_batch), self._gen, int(self.options.groups),
                                               self._eligible)
        if not groups and not self.old:
            self._record(ctx.loss, None)
            return
        contrastive, ird, replay = self.losses(ctx, groups)
        loss = contrastive
        if ird is not None:
            loss = loss + self._lambda * ird
        if replay is not None:
            loss = loss + replay
        ctx.loss = loss
        self._record(contrastive, ird)

    def _record(self, contrastive, ird):
        vals = torch.stack([contrastive.detach(),
                            ird.detach() if ird is not None else torch.full_like(contrastive.detach(), float("nan"))])
        self._sums = vals if self._sums is None else self._sums + vals
        self._batches += 1

    def after_training_exp(self, ctx):
        super().after_training_exp(ctx)              # offer the step's pairs to the buffer
        if self._sums is not None:
            c, d = host(self._sums / self._batches).tolist()
            self.history.append({"step": ctx.step, "contrastive": c, "ird": None if d != d else d,
                                 "coefficient": self._lambda if self.old else None})
        self.steps_done += 1
        self.old = {}
        self._sums = None

    def state_summary(self):
        return dict(self.buffer_summary(), history=self.history)

"""A store of past modality PAIRS for the replay methods (``er``, ``agem``, ``gem``).

The buffer keeps copies of the features ``(x_a, x_b)`` of some training pairs of earlier steps, grouped by the
step (= task = one modality pair) they come from. Modalities may have different widths, so the rows are kept
per task: ``rows[task] = (xa, xb)``. It is filled once per step, from the step's full training matrices, when
the step ends (``after_training_exp``); the trainer gives no access to them afterwards.

Two filling policies:

- ``reservoir`` (Algorithm R of Vitter, "Random sampling with a reservoir", ACM TOMS 1985; as in Chaudhry et
  al. 2019): a fixed total ``capacity`` over every pair seen
  so far; after N pairs, each is in the buffer with probability ``capacity / N``. Item ``i`` (0-based over the
  whole stream) takes slot ``i`` while the buffer fills, and afterwards draws ``j`` uniform in ``[0, i]`` and
  replaces slot ``j`` if ``j < capacity``. The draws do not depend on the buffer's content, so a whole step is
  decided at once: draw every ``j``, and give each slot the *last* item that chose it (what the sequential
  algorithm ends with).
- ``per_step`` (the episodic memory of GEM / A-GEM): a uniform random subset of ``per_step`` pairs of each step,
  kept for ever.

After each step the store is compacted: every kept pair has a flat index, the tasks' blocks being contiguous
(``offsets``), which makes drawing a replay batch one ``randperm`` plus one ``searchsorted``.
"""
from __future__ import annotations

import torch

POLICIES = ("reservoir", "per_step")


def reservoir_winners(n_seen: int, n_new: int, capacity: int, gen: torch.Generator) -> torch.Tensor:
    """Algorithm R for ``n_new`` items arriving after ``n_seen``, decided at once.

    Returns ``winner`` of shape ``(capacity,)``: the local index (0..n_new-1) of the new item that ends up in
    each slot, or -1 where the slot keeps what it had. Equal to running the sequential algorithm with the
    same draws: an item is placed in slot ``j_i`` and a later item that draws the same slot overwrites it."""
    i = torch.arange(n_seen, n_seen + n_new, dtype=torch.float64)
    j = torch.floor(torch.rand(n_new, generator=gen, dtype=torch.float64) * (i + 1)).long()
    filling = i < capacity
    j[filling] = i[filling].long()               # while the buffer fills, item i takes slot i
    keep = j < capacity
    winner = torch.full((capacity,), -1, dtype=torch.long)
    local = torch.arange(n_new)[keep]
    winner.scatter_reduce_(0, j[keep], local, reduce="amax")   # last writer wins
    return winner


class PairMemory:
    """Past pairs by task, filled by ``reservoir`` (``capacity`` in total) or ``per_step`` (``per_step`` each)."""

    def __init__(self, policy: str = "reservoir", capacity: int = 1000, per_step: int = 256):
        if policy not in POLICIES:
            raise ValueError(f"buffer policy must be one of {POLICIES}, got {policy!r}")
        if capacity < 0 or per_step < 0:
            raise ValueError("buffer sizes must be >= 0")
        self.policy, self.capacity, self.per_step = policy, capacity, per_step
        self.rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # task -> (xa, xb) kept rows
        self.pairs: dict[int, tuple[str, str]] = {}                     # task -> its modality pair
        self.n_seen = 0
        # reservoir bookkeeping: slot -> (task, row in that task's block), -1 when empty
        self.slot_task = torch.full((capacity,), -1, dtype=torch.long)
        self.slot_row = torch.full((capacity,), -1, dtype=torch.long)
        self._flat()

    # -- contents ------------------------------------------------------------------------------------
    @property
    def tasks(self) -> list[int]:
        return list(self.rows)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def sizes(self) -> dict[int, int]:
        return {t: len(xa) for t, (xa, _) in self.rows.items()}

    def modalities(self) -> list[str]:
        out = []
        for t in self.rows:
            for m in self.pairs[t]:
                if m not in out:
                    out.append(m)
        return out

    def _flat(self):
        self.order = list(self.rows)
        counts = torch.tensor([0] + [len(self.rows[t][0]) for t in self.order], dtype=torch.long)
        self.offsets = torch.cumsum(counts, 0)
        self._all = torch.arange(int(self.offsets[-1]))

    # -- filling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def add_step(self, task: int, pair: tuple[str, str], xa: torch.Tensor, xb: torch.Tensor,
                 gen: torch.Generator) -> None:
        """Offer every pair of one step (``xa[i]``, ``xb[i]``) to the buffer."""
        n = len(xa)
        if self.policy == "per_step":
            k = min(self.per_step, n)
            if k:
                idx = torch.randperm(n, generator=gen)[:k].sort().values.to(xa.device)
                self.rows[task] = (xa[idx], xb[idx])          # advanced indexing copies
                self.pairs[task] = (pair[0], pair[1])
        else:
            winner = reservoir_winners(self.n_seen, n, self.capacity, gen)
            new_slots = (winner >= 0).nonzero().squeeze(1)
            if len(new_slots):
                taken = winner[new_slots].sort()
                self.slot_task[new_slots[taken.indices]] = task
                self.slot_row[new_slots[taken.indices]] = torch.arange(len(new_slots))
                idx = taken.values.to(xa.device)
                self.rows[task] = (xa[idx], xb[idx])          # advanced indexing copies
                self.pairs[task] = (pair[0], pair[1])
            self._compact()
        self.n_seen += n
        self._flat()

    def _compact(self):
        """Drop the rows no slot points to any more; renumber the slots' rows."""
        for t in list(self.rows):
            in_t = (self.slot_task == t).nonzero().squeeze(1)
            if len(in_t) == 0:
                del self.rows[t], self.pairs[t]
                continue
            alive = self.slot_row[in_t]
            order = alive.argsort()
            alive_sorted = alive[order]
            xa, xb = self.rows[t]
            if len(alive_sorted) != len(xa):
                dev = xa.device
                self.rows[t] = (xa[alive_sorted.to(dev)], xb[alive_sorted.to(dev)])
            self.slot_row[in_t[order]] = torch.arange(len(in_t))

    # -- drawing -------------------------------------------------------------------------------------
    def sample(self, batch: int, gen: torch.Generator, groups: int = 0, tasks=None, min_group: int = 2):
        """A replay batch of up to ``batch`` pairs, GROUPED BY TASK: a list of ``(task, pair, xa, xb)``, each group
        from one modality pair (InfoNCE is computed per group).

        ``tasks``: draw only from these tasks (None: all). ``groups = 0``: the batch is drawn uniformly without
        replacement from the (eligible) buffer; ``groups = k``: first ``k`` tasks are drawn without replacement
        with probabilities proportional to their numbers of kept pairs, then the batch uniformly from those
        tasks' pairs (bigger groups, hence more negatives per InfoNCE). Groups with fewer than ``min_group``
        pairs are dropped (a one-pair InfoNCE has no negative). Deterministic given ``gen``."""
        total = len(self)
        if total == 0 or batch <= 0:
            return []
        ks = list(range(len(self.order))) if tasks is None else [k for k, t in enumerate(self.order) if t in tasks]
        if not ks:
            return []
        if groups and groups < len(ks):
            counts = (self.offsets[1:] - self.offsets[:-1])[ks].double()
            pick = torch.multinomial(counts, groups, replacement=False, generator=gen).sort().values.tolist()
            ks = [ks[i] for i in pick]
        if len(ks) == len(self.order):
            idx = torch.randperm(total, generator=gen)[:batch]
        else:
            pool = torch.cat([self._all[self.offsets[k]:self.offsets[k + 1]] for k in ks])
            idx = pool[torch.randperm(len(pool), generator=gen)[:batch]]
        idx = idx.sort().values
        bounds = torch.searchsorted(idx, self.offsets).tolist()
        out = []
        for k in ks:
            lo, hi = bounds[k], bounds[k + 1]
            if hi - lo < min_group:
                continue
            t = self.order[k]
            xa, xb = self.rows[t]
            rows = (idx[lo:hi] - self.offsets[k]).to(xa.device)
            out.append((t, self.pairs[t], xa[rows], xb[rows]))
        return out

    def task_rows(self, task: int):
        """All kept pairs of one task (GEM's per-task memory)."""
        return self.rows[task]


# --- what the three replay methods share --------------------------------------------------------------------
HEADS = ("all", "pair")         # heads in play in a replay step: every buffered pair's, or the step's two


def embed(heads, m: str, x: torch.Tensor, in_play) -> torch.Tensor:
    """``heads[m](x)``; without a graph when head ``m`` is not trained this step (``in_play`` a set, or None
    for every head): its output is then a constant, and no gradient is spent on (or left in) a frozen head."""
    if in_play is None or m in in_play:
        return heads[m](x)
    with torch.no_grad():
        return heads[m](x)


def group_loss(heads, groups, loss_cfg, in_play=None) -> torch.Tensor:
    """InfoNCE of a replay batch, computed per pair group and averaged with the groups' sizes as weights
    (never over a batch that mixes modality pairs); heads outside ``in_play`` get no gradient."""
    from bench.loss import info_nce
    total: torch.Tensor | float = 0.0
    n = 0
    for _, (a, b), xa, xb in groups:
        k = len(xa)
        total = total + k * info_nce(embed(heads, a, xa, in_play), embed(heads, b, xb, in_play), loss_cfg)
        n += k
    return torch.as_tensor(total) / n


class ReplayMixin:
    """Buffer, seeds, heads in play and flat-gradient helpers shared by ``er``, ``agem`` and ``gem``.

    Options read: ``seed`` (None: the run's seed; the buffer's draws are the ``buffer`` stream of
    ``bench.seeds``, salt 1 when storing, 2 when drawing) and ``heads`` (``all``: every head of a buffered pair
    is in play and trainable; ``pair``: only the step's two heads are, and only buffered pairs sharing a
    modality with the step are replayed)."""

    def _init_replay(self, policy: str, capacity: int, per_step: int):
        self.replay_buffer = PairMemory(policy, int(capacity), int(per_step))
        self._gen = None
        self._params: list = []
        self._eligible = None
        self.in_play: set[str] | None = None

    def trainable_modalities(self, ctx, tasks):
        """The step's heads plus (``heads=all``) every head of a buffered pair: replay, or a projected
        gradient, moves them too."""
        out = super().trainable_modalities(ctx, tasks)
        if self.options.heads == "all":
            for m in self.replay_buffer.modalities():
                if m not in out:
                    out.append(m)
        return out

    def _start_step(self, ctx):
        """Per step: the replay-sampling generator, the replayable tasks, the parameters in play and a flat
        gradient vector."""
        self._gen = ctx.rng("buffer", salt=2, seed=self.options.seed)
        mods = self.trainable_modalities(ctx, [ctx.step])
        self.in_play = set(mods)                # heads the optimiser updates this step
        buf = self.replay_buffer
        self._eligible = [t for t in buf.tasks if set(buf.pairs[t]) & set(mods)]
        self._params = [p for m in mods for p in ctx.heads[m].parameters()]
        self._slices, offset = {}, 0
        for m in mods:
            n = sum(p.numel() for p in ctx.heads[m].parameters())
            self._slices[m] = (offset, offset + n)
            offset += n
        self._g = torch.zeros(offset, device=self._params[0].device) if self._params else None

    @torch.no_grad()
    def _replay_gradient(self, heads, groups, loss_cfg, out: torch.Tensor) -> torch.Tensor:
        """The gradient of ``group_loss(heads, groups, loss_cfg)`` over the parameters in play, into the flat
        ``out``; written out rather than through autograd: through a linear head, dW = dzᵀ x and db = Σ dz,
        with dz the InfoNCE's gradient on the embeddings (``bench.loss.embedding_grads``), each group's
        weighted by its share of the pairs."""
        from bench.loss import embedding_grads
        out.zero_()
        total = sum(len(g[2]) for g in groups)
        for _, (a, b), xa, xb in groups:
            dz = embedding_grads(heads[a](xa), heads[b](xb), loss_cfg)
            for m, x, d in zip((a, b), (xa, xb), dz):
                if m in self._slices:
                    self._add_head_gradient(out, heads[m], m, x, d, len(xa) / total)
        return out

    def _add_head_gradient(self, out: torch.Tensor, lin, m: str, x: torch.Tensor, dz: torch.Tensor,
                           weight: float = 1.0) -> None:
        """Add ``weight`` times head ``m``'s gradient, dW = dzᵀ x and db = Σ dz (``dz``: the loss's gradient on
        the head's outputs for inputs ``x``), into its slice of the flat vector ``out``."""
        lo, hi = self._slices[m]
        n_w = lin.weight.numel()
        out[lo:lo + n_w].view_as(lin.weight).addmm_(dz.T, x, alpha=weight)
        out[lo + n_w:hi].add_(dz.sum(0), alpha=weight)

    def _grads_to_flat(self, out: torch.Tensor) -> torch.Tensor:
        """The ``.grad`` of the parameters in play, into ``out`` (zeros where a parameter has none)."""
        o = 0
        for p in self._params:
            n = p.numel()
            if p.grad is None:
                out[o:o + n].zero_()
            else:
                out[o:o + n].copy_(p.grad.reshape(-1))
            o += n
        return out

    def _flat_to_grads(self, flat: torch.Tensor) -> None:
        o = 0
        for p in self._params:
            n = p.numel()
            v = flat[o:o + n].view_as(p)
            if p.grad is None:
                p.grad = v.clone()
            else:
                p.grad.copy_(v)
            o += n

    @torch.no_grad()
    def _params_to_flat(self, out: torch.Tensor) -> torch.Tensor:
        o = 0
        for p in self._params:
            n = p.numel()
            out[o:o + n].copy_(p.reshape(-1))
            o += n
        return out

    @torch.no_grad()
    def _flat_to_params(self, flat: torch.Tensor) -> None:
        o = 0
        for p in self._params:
            n = p.numel()
            p.copy_(flat[o:o + n].view_as(p))
            o += n

    def after_training_exp(self, ctx):
        xa, xb = ctx.train
        self.replay_buffer.add_step(ctx.step, ctx.pair, xa, xb, ctx.rng("buffer", salt=1, seed=self.options.seed))

    def buffer_summary(self) -> dict:
        buf = self.replay_buffer
        return {"buffer_policy": buf.policy, "buffer_pairs": len(buf),
                "buffer_per_task": {str(t): n for t, n in buf.sizes().items()}, "pairs_seen": buf.n_seen}

"""Evaluation on every test set: retrieval recall both ways, zero-shot accuracy, alignment scores.

Follows the paper's protocol (eval_util.py of the official code): Recall@1/5/10 from raw dot products of
head outputs on ``n_pairs`` random test pairs, ``repeats`` times, averaged; both directions averaged. The
random subsets are drawn once per task from the run seed, so every evaluation point (row) sees the same
pairs. Zero-shot Acc: the non-text embedding against the class-name texts through the text head.
"""
from __future__ import annotations

from typing import Any

import torch

from . import seeds
from .devices import device_of, host
from .heads import Heads
from .scenario import Task


def _counts(scores: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query (rows for ``dim = 1``, columns for ``dim = 0``): how many candidates score above its ground
    truth (the diagonal) and how many tie with it.

    From the signs of the differences, two float reductions (a third of the time of counting two boolean
    comparisons on CPU): their sum is above − below, their absolute sum above + below; sums of ±1 are exact
    in float32 below 2²⁴ candidates (half-precision scores are widened first). A NaN score counts as below
    (as a comparison would have it); an infinite score equal to the ground truth's also counts as below."""
    if scores.is_floating_point() and torch.finfo(scores.dtype).bits < 32:
        scores = scores.float()
    diag = scores.diagonal().unsqueeze(dim)
    sign = (scores - diag).nan_to_num_(-1.0).sign_()
    net = sign.sum(dim)                         # before abs_ overwrites the signs
    unequal = sign.abs_().sum(dim)
    above = ((net + unequal) / 2).long()
    return above, scores.shape[dim] - 1 - unequal.long()     # the ground truth ties with itself


def _recall(above: torch.Tensor, tied: torch.Tensor, ks, dtype) -> torch.Tensor:
    n = (tied + 1).to(dtype)
    k = torch.tensor(ks, device=above.device).unsqueeze(1)
    return ((k - above).clamp(min=0).minimum(tied + 1) / n).mean(1)


def recall_at(scores: torch.Tensor, ks=(1, 5, 10)) -> torch.Tensor:
    """Recall@k (one value per ``ks``, a tensor on ``scores``' device) of the queries (rows) against their ground
    truth on the diagonal, ties counted fairly.

    A row's candidates that score above its ground truth push it down; candidates that tie with it (identical
    embeddings: class-name texts shared by many samples) are broken uniformly at random, and the indicator
    "ranks in the top k" is replaced by its expected value under that tie-breaking. With ``g`` candidates
    above and ``e`` tied, the rank is ``g + U`` with ``U`` uniform on ``0..e``, so the row counts
    ``clamp(k - g, 0, e + 1) / (e + 1)``: deterministic, and neither the query's favour (ties ignored) nor
    an arbitrary index order (``topk``) decides."""
    return _recall(*_counts(scores, 1), ks, scores.dtype)


def recall_both(scores: torch.Tensor, ks=(1, 5, 10)) -> tuple[torch.Tensor, torch.Tensor]:
    """``recall_at(scores)`` and ``recall_at(scores.T)`` — the rows as queries, then the columns — from one
    matrix (the columns' counts are column reductions: no transposed copy)."""
    return _recall(*_counts(scores, 1), ks, scores.dtype), _recall(*_counts(scores, 0), ks, scores.dtype)


def _on_host(cells: dict[str, list[torch.Tensor | None]]) -> dict[str, list[float | None]]:
    """The cells' values on the host, in one transfer (None stays None)."""
    flat = [c for k in cells for c in cells[k] if c is not None]
    values = iter(host(torch.stack([c.double() for c in flat])).tolist()) if flat else iter(())
    return {k: [None if c is None else next(values) for c in cells[k]] for k in cells}


class Evaluator:
    """Evaluates heads on every task's test set. Test features, subsets and references live on the heads'
    device; one row of results comes back to the host in one transfer."""

    def __init__(self, tasks: list[Task], seed: int, n_pairs: int = 1000, repeats: int = 5, align_pairs: int = 256,
                 probes: list[Task] | None = None, rows: list[torch.Tensor | None] | None = None, world: int = 0):
        """``rows``: per task (steps, then probes), the test rows its experience holds (``None``: all) — what
        a benchmark changed with Avalanche's utilities leaves of each test set. ``world``: the draws' world
        (k > 0: other test subsets from the same seed)."""
        gen = seeds.generator(seed, "evaluation", salt=world * seeds.WORLD_SALT)
        self.n_steps = len(tasks)
        self.tasks = tasks + list(probes or [])      # probes: evaluated like steps, never learned
        self.rows = list(rows) if rows is not None else [None] * len(self.tasks)
        self.subsets: list = [None] * len(self.tasks)
        self.align_idx: list = [None] * len(self.tasks)
        # drawn in the stream file's step order, so a task keeps its pairs when a benchmark trains the steps
        # in another order
        for j in sorted(range(len(self.tasks)), key=lambda j: (j >= self.n_steps, self.tasks[j].index, j)):
            t, held = self.tasks[j], self.rows[j]
            n = len(t.test_source) if held is None else len(held)
            def pick(i: torch.Tensor, held=held) -> torch.Tensor:     # positions -> the rows they stand for
                return i if held is None else held[i]
            if n <= n_pairs:                        # every pair once (None: all of them, in order)
                self.subsets[j] = [None if held is None else held]
            else:
                self.subsets[j] = [pick(torch.randperm(n, generator=gen)[:n_pairs]) for _ in range(repeats)]
            self.align_idx[j] = pick(torch.randperm(n, generator=gen)[:align_pairs]).sort().values
        self.reference: dict[int, torch.Tensor] = {}
        self._device = torch.device("cpu")          # the heads' device, read at each evaluation
        self._on_device: dict[tuple, torch.Tensor] = {}
        self._last: dict[str, list[torch.Tensor]] = {}     # each head's values at the previous evaluation
        self._cache: dict[int, tuple[dict, torch.Tensor | None]] = {}
        # within_step's own: it must not move the rows' record of what changed since the previous row
        self._inner_last: dict[str, list[torch.Tensor]] = {}
        self._inner_cache: dict[int, tuple[dict, torch.Tensor | None]] = {}

    def _to(self, key, t: torch.Tensor | None) -> torch.Tensor:
        """``t`` on the heads' device, moved once per evaluator."""
        if key not in self._on_device:
            assert t is not None, f"{key}: no tensor to move (a task's labels or class texts are missing)"
            self._on_device[key] = t.to(self._device)
        return self._on_device[key]

    @torch.no_grad()
    def embed(self, heads: Heads, task: Task):
        a, b = task.pair
        f = task.test_source.features
        return heads(self._to((task.name, a), f[a]), a), heads(self._to((task.name, b), f[b]), b)

    KEYS = ("r1", "r5", "r10", "r1_ab", "r1_ba", "r10_ab", "r10_ba", "acc", "align_dev")

    def depends_on(self, j: int) -> tuple[str, ...]:
        """The heads task ``j``'s cells depend on: its pair's (zero-shot Acc's class names go through the
        pair's text head)."""
        return self.tasks[j].pair

    def _changed(self, heads: Heads, store: dict | None = None) -> set[str]:
        """The modalities whose head differs (in value) from the previous evaluation (recorded in ``store``,
        default the rows'). Values, not version counters: methods may write weights through ``.data``, which
        a version counter does not see."""
        store = self._last if store is None else store
        if self._device.type == "meta":
            return set(heads.modalities)
        changed = set()
        for m, lin in heads.linears.items():
            now = [p.detach() for p in lin.parameters()]
            last = store.get(m)
            if last is None or not all(torch.equal(a, b) for a, b in zip(now, last)):
                changed.add(m)
                store[m] = [p.clone() for p in now]
        return changed

    def _task_cells(self, heads: Heads, j: int) -> tuple[dict, torch.Tensor | None]:
        """Task ``j``'s cells (tensors on the device) and its alignment-score matrix (steps only)."""
        task, cells = self.tasks[j], dict[str, torch.Tensor]()
        za, zb = self.embed(heads, task)
        if "recall" in task.metrics:
            ab: Any = 0                             # then the sum of the subsets' recall tensors
            ba: Any = 0
            for r, idx in enumerate(self.subsets[j]):
                if idx is None:                     # the whole test set, in order: no gathered copy
                    s = za @ zb.T
                else:
                    idx = self._to(("subset", j, r), idx)
                    s = za[idx] @ zb[idx].T
                rab, rba = recall_both(s)
                ab, ba = ab + rab, ba + rba
            ab, ba = 100 * ab / len(self.subsets[j]), 100 * ba / len(self.subsets[j])
            both = (ab + ba) / 2
            cells.update(r1=both[0], r5=both[1], r10=both[2], r1_ab=ab[0], r1_ba=ba[0], r10_ab=ab[2], r10_ba=ba[2])
        if "acc" in task.metrics:
            cells["acc"] = self.accuracy(heads, task, za, zb, self.rows[j])
        A = None
        if j < self.n_steps:
            idx = self._to(("align", j), self.align_idx[j])
            A = za[idx] @ zb[idx].T
        return cells, A

    @torch.no_grad()
    def evaluate(self, heads: Heads, learned: int) -> dict[str, list[float | None]]:
        """One row of every metric matrix: the steps' columns, then the probes'. ``learned`` = number of steps
        trained so far; the alignment scores of task ``learned-1`` become its reference (A_{j;j}). A task
        none of whose heads changed since the previous evaluation keeps its cells (the same numbers,
        recomputed from the same values): most steps train one pair's heads."""
        self._device = device_of(heads)
        changed = self._changed(heads)
        cells: dict[str, list[torch.Tensor | None]] = {k: [] for k in self.KEYS}
        for j in range(len(self.tasks)):
            if j not in self._cache or changed.intersection(self.depends_on(j)):
                self._cache[j] = self._task_cells(heads, j)
            task_cells, A = self._cache[j]
            for k in self.KEYS[:-1]:
                cells[k].append(task_cells.get(k))
            if A is None:
                cells["align_dev"].append(None)
                continue
            if j == learned - 1:
                self.reference[j] = A
            ref = self.reference.get(j)
            cells["align_dev"].append(None if ref is None else (A - ref).norm() / ref.norm())
        return _on_host(cells)

    @torch.no_grad()
    def within_step(self, heads: Heads, old: list[int]) -> dict[str, list[float | None]]:
        """R@10 and the alignment-score deviation of the tasks ``old`` (learned before the current step) on
        the same test pairs as the rows, for the stability gap (``--eval-every``): cells of a task whose heads
        did not change since the previous within-step evaluation are kept, as in ``evaluate``, whose own
        record of changes this leaves alone; no task's reference moves."""
        self._device = device_of(heads)
        changed = self._changed(heads, self._inner_last)
        cells: dict[str, list[torch.Tensor | None]] = {"r10": [], "align_dev": []}
        for j in old:
            if j not in self._inner_cache or changed.intersection(self.depends_on(j)):
                self._inner_cache[j] = self._task_cells(heads, j)
            task_cells, A = self._inner_cache[j]
            ref = self.reference.get(j)
            cells["r10"].append(task_cells.get("r10"))
            cells["align_dev"].append(None if A is None or ref is None else (A - ref).norm() / ref.norm())
        return _on_host(cells)

    def accuracy(self, heads: Heads, task: Task, za, zb, rows: torch.Tensor | None = None) -> torch.Tensor:
        src = task.test_source
        query = zb if task.text_side == 0 else za
        labels = self._to((task.name, "labels"), src.labels)
        if rows is not None:
            held = self._to((task.name, "rows"), rows)
            query, labels = query[held], labels[held]
        texts = heads(self._to((task.name, "class_texts"), src.class_texts), "text")
        pred = (query @ texts.T).argmax(1)
        return (pred == labels).float().mean().double() * 100

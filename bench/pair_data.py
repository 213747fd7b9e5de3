"""The Avalanche dataset of one step's pairs: items ``(x_a, x_b, step)``, Avalanche's task-aware interface
(``task_set``, ``targets_task_labels``), a collate that lets pairs of different feature widths share a
batch, and each item's ``rows``. Imported by ``bench.scenario`` only when a stream is built (Avalanche costs
seconds to import; ``--help`` must not pay it)."""
from __future__ import annotations

import torch
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from avalanche.benchmarks.utils.utils import TaskSet
from torch.utils.data import Dataset


class PairFeatures(Dataset):
    """The two feature matrices of one step's split; item ``i`` is ``(x_a[i], x_b[i])`` (the experience's
    dataset appends the task label, as Avalanche expects)."""

    def __init__(self, xa: torch.Tensor, xb: torch.Tensor):
        self.xa, self.xb = xa, xb

    def __len__(self):
        return len(self.xa)

    def __getitem__(self, i):
        return self.xa[i], self.xb[i]


def _stack(xs: list[torch.Tensor]) -> torch.Tensor:
    """Rows stacked into a matrix; rows of different widths (pairs of different encoders' towers in one
    replay batch) are zero-padded to the widest, and ``bench.bridge.PairModel`` cuts each back to its head's
    width."""
    width = max(x.shape[-1] for x in xs)
    if all(x.shape[-1] == width for x in xs):
        return torch.stack(xs)
    out = xs[0].new_zeros(len(xs), width)
    for i, x in enumerate(xs):
        out[i, :x.shape[-1]] = x
    return out


def collate(items) -> list:
    """A minibatch ``[x_a, x_b, task labels]`` from items ``(x_a, x_b, step)``."""
    xa, xb, t = zip(*items)
    return [_stack(list(xa)), _stack(list(xb)), torch.as_tensor(t, dtype=torch.long)]


class PairDataset(AvalancheDataset):
    """An ``AvalancheDataset`` of pairs with the task-aware interface Avalanche's plugins read (``task_set``,
    ``task_pattern_indices``); subsets and concatenations stay ``PairDataset`` with the same collate."""

    @property
    def task_pattern_indices(self):
        return self.targets_task_labels.val_to_idx

    @property
    def task_set(self) -> TaskSet:
        return TaskSet(self)


def pair_dataset(xa: torch.Tensor, xb: torch.Tensor, step: int, split: str) -> PairDataset:
    """An experience's dataset: items ``(x_a, x_b, step)`` — the last element is the task label Avalanche
    reads (``targets_task_labels``), the step's index — and two data attributes that Avalanche's subsets
    and concatenations carry along: ``rows``, each item's row in the step's feature matrices, and ``split``,
    which of the source's splits those matrices are (``train`` or ``test``). The trainer and the evaluator
    read which pairs an experience holds from them, so a benchmark changed with Avalanche's own utilities
    (a subset, a validation stream cut from the training pairs) changes what is trained and evaluated, and
    the tensors are still indexed, never collated."""
    n = len(xa)
    return PairDataset([PairFeatures(xa, xb)], data_attributes=[
        DataAttribute([step] * n, "targets_task_labels", use_in_getitem=True),
        DataAttribute(list(range(n)), "rows"), DataAttribute([split] * n, "split")], collate_fn=collate)

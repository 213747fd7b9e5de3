"""What a method costs in memory beyond the heads: the bytes of the tensors it holds, and the heads' trainable
parameters — both recorded in every run file (``budget``) and shown as table columns.

``state_bytes`` walks the method object: its attributes, their lists, tuples, dicts and sets, and the objects
of the methods package it keeps (a replay buffer, a projector), counting each tensor's own elements once
(buffers, importances, anchors, projectors, covariances, stored embeddings, copies of earlier heads). Not
counted: the live heads' parameters and buffers (what every method trains), an optimiser's state (every
method has one), objects of ``bench`` it may reference (the scenario's features belong to the run, not to
the method), random generators.
"""
from __future__ import annotations

import torch


def trainable_params(heads: torch.nn.Module) -> int:
    return sum(p.numel() for p in heads.parameters() if p.requires_grad)


def state_bytes(method, heads: torch.nn.Module) -> int:
    """Bytes of the tensors ``method`` holds beyond ``heads`` (see the module's docstring)."""
    live = {t.data_ptr() for t in [*heads.parameters(), *heads.buffers()] if t.device.type != "meta"}
    live_ids = {id(t) for t in [*heads.parameters(), *heads.buffers()]}
    seen: set[int] = set()
    counted: set[tuple] = set()
    total = 0

    def visit(x) -> None:
        nonlocal total
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            if id(x) in live_ids or (x.device.type != "meta" and x.data_ptr() in live and x.numel()):
                return
            key = (x.device.type, x.data_ptr() if x.device.type != "meta" else id(x), tuple(x.shape), x.stride())
            if key not in counted:
                counted.add(key)
                total += x.numel() * x.element_size()
        elif isinstance(x, torch.nn.Module):
            if x is not heads:
                for t in x.state_dict(keep_vars=True).values():
                    visit(t)
        elif isinstance(x, torch.optim.Optimizer | torch.Generator):
            return
        elif isinstance(x, dict):
            for v in x.values():
                visit(v)
        elif isinstance(x, list | tuple | set | frozenset):
            for v in x:
                visit(v)
        elif type(x).__module__.split(".")[0] == "methods" and hasattr(x, "__dict__"):
            visit(vars(x))

    visit(vars(method))
    return total

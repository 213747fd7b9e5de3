"""Where tensors live. Every tensor of a run lives on the heads' device; results come back to the host once,
through ``host``.

The ``meta`` device carries shapes and devices but no data. The test suite runs every registered method's
hooks and the evaluator there (no GPU on CI), so a tensor created on the CPU by default, or a value read in
the middle of a step, fails in CI instead of on a user's GPU. ``host`` is the one place that knows meta
tensors have no values: it returns zeros of the right shape.
"""
from __future__ import annotations

import torch


def device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def host(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached on the CPU (zeros of its shape and dtype for a meta tensor, which has no values)."""
    if t.is_meta:
        return torch.zeros(t.shape, dtype=t.dtype)
    return t.detach().cpu()


def is_data_free(device: torch.device | str) -> bool:
    """True on the meta device: values cannot be read, so checks on values are skipped."""
    return torch.device(device).type == "meta"

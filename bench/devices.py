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


def reset_peak_memory(device) -> None:
    """Start measuring a run's peak memory: the process' peak resident set (Linux: ``clear_refs``) and, on
    CUDA, the device allocator's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass                                  # not Linux: the peak since the process started
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device) -> dict:
    """``{"peak_rss_mb": …}`` (+ ``"peak_device_mb"`` on CUDA) since ``reset_peak_memory``."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            hwm = next(line for line in f if line.startswith("VmHWM:"))
        out["peak_rss_mb"] = round(int(hwm.split()[1]) / 1024, 1)
    except (OSError, StopIteration, ValueError):
        import resource
        import sys
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_rss_mb"] = round(rss / (2 ** 20 if sys.platform == "darwin" else 1024), 1)
    if torch.device(device).type == "cuda":
        out["peak_device_mb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
    return out

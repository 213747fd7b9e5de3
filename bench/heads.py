"""One linear head per modality, mapping frozen encoder features into the joint space."""
from __future__ import annotations

import torch
from torch import nn

from . import seeds


class Heads(nn.Module):
    """``W^m`` (out×in) and ``b^m`` per modality. Square heads start at the identity with zero bias (the
    paper: the pre-bound encoders are already aligned, so training starts from the zero-shot model).
    Non-square heads (towers of different widths) start as a seeded random semi-orthogonal map, which
    preserves inner products as well as a width change allows."""

    def __init__(self, in_dims: dict[str, int], out_dim: int, seed: int = 0):
        super().__init__()
        gen = seeds.generator(seed, "heads")
        self.linears = nn.ModuleDict()
        for m in sorted(in_dims):
            lin = nn.Linear(in_dims[m], out_dim)
            with torch.no_grad():
                if in_dims[m] == out_dim:
                    lin.weight.copy_(torch.eye(out_dim))
                else:
                    q, _ = torch.linalg.qr(torch.randn(max(in_dims[m], out_dim), min(in_dims[m], out_dim), generator=gen))
                    lin.weight.copy_(q if out_dim >= in_dims[m] else q.T)
                lin.bias.zero_()
            self.linears[m] = lin
        self.out_dim = out_dim

    @property
    def modalities(self) -> list[str]:
        return list(self.linears.keys())

    def __getitem__(self, modality: str) -> nn.Linear:
        return self.linears[modality]  # type: ignore[return-value]  # ModuleDict is typed as holding Modules

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.linears[modality](x)

    def parameters_of(self, modalities) -> list[nn.Parameter]:
        return [p for m in modalities for p in self.linears[m].parameters()]

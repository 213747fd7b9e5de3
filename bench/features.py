"""Feature banks: per source and split, one float32 matrix per modality (rows aligned = pairs), sample ids,
optional class labels and class-name text features."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import BenchError


@dataclass
class SplitFeatures:
    features: dict[str, torch.Tensor]          # modality -> (n, d) float32, row i of every modality = pair i
    ids: list[str]
    labels: torch.Tensor | None = None         # (n,) int64 class index, or None
    class_texts: torch.Tensor | None = None    # (C, d_text) text features of the class names, or None
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def validate(self, where: str) -> "SplitFeatures":
        n = len(self.ids)
        if len(set(self.ids)) != n:
            raise BenchError(f"{where}: duplicate sample ids")
        for m, x in self.features.items():
            if x.dim() != 2:
                raise BenchError(f"{where}: modality {m!r} must be a 2-D matrix, got shape {tuple(x.shape)}")
            if x.shape[0] != n:
                raise BenchError(f"{where}: modality {m!r} has {x.shape[0]} rows but there are {n} sample ids")
            if x.dtype != torch.float32:
                raise BenchError(f"{where}: modality {m!r} must be float32, got {x.dtype}")
            if not torch.isfinite(x).all():
                raise BenchError(f"{where}: modality {m!r} contains NaN or Inf")
        if self.labels is not None:
            if self.labels.shape != (n,):
                raise BenchError(f"{where}: labels must have shape ({n},), got {tuple(self.labels.shape)}")
            if self.class_texts is not None and n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_texts)):
                raise BenchError(f"{where}: labels must lie in [0, {len(self.class_texts)})")
        if self.class_texts is not None and not torch.isfinite(self.class_texts).all():
            raise BenchError(f"{where}: class texts contain NaN or Inf")
        return self

"""The in-memory dataset every family trains on, and its resumable batch sampler.

Images are float32 (N, C, H, W) in [-1, 1]; 2-D points are (N, 2); labels, when present, are
int64 (N,). Data small enough for memory lives as one tensor on the training device, so a batch
is an index, not a DataLoader round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError


@dataclass
class Dataset:
    x: Tensor  # (N, C, H, W) images in [-1, 1], or (N, D) points/vectors
    y: Tensor | None = None  # (N,) int64 class labels, or None
    kind: str = "image"  # "image" | "points"
    name: str = ""
    class_names: list[str] | None = None
    modes: Tensor | None = None  # (K, D) mixture centres of a known toy distribution
    mode_std: float | None = None  # their standard deviation (for the 3-sigma mode metrics)
    notes: list[str] = field(default_factory=list)  # e.g. files skipped while loading

    def __post_init__(self) -> None:
        if self.x.dim() < 2 or self.x.shape[0] == 0:
            raise DataError(f"dataset {self.name!r} is empty")
        if self.y is not None and self.y.shape[0] != self.x.shape[0]:
            raise DataError(f"dataset {self.name!r}: {self.x.shape[0]} examples but {self.y.shape[0]} labels")
        if not torch.isfinite(self.x).all():
            raise DataError(f"dataset {self.name!r} contains NaN or infinite values")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.x.shape[1:])

    @property
    def n_classes(self) -> int:
        if self.y is None:
            return 0
        return len(self.class_names) if self.class_names else int(self.y.max()) + 1

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> Dataset:
        self.x = self.x.to(device)
        self.y = None if self.y is None else self.y.to(device)
        return self


def resize_images(x: Tensor, size: int) -> Tensor:
    """Resize (N, C, H, W) images to size x size with antialiased bilinear filtering."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    down = size < min(x.shape[-2:])
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=down).clamp_(
        -1, 1
    )


class BatchSampler:
    """Draws batches without replacement, reshuffling every epoch, from a seeded generator.

    Its state (generator state, current permutation, position) is saved in checkpoints so a
    resumed run sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if batch_size > n:
            batch_size = n
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def next_indices(self) -> Tensor:
        if self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def next_batch(self, data: Dataset) -> dict[str, Tensor]:
        """{"x": (B, ...), "y": (B,) when labelled} on the data's device."""
        idx = self.next_indices().to(data.x.device)
        batch = {"x": data.x[idx]}
        if data.y is not None:
            batch["y"] = data.y[idx]
        return batch

    def state_tensors(self) -> dict[str, Tensor]:
        return {"rng": self.generator.get_state(), "perm": self.perm.clone(), "pos": torch.tensor(self.pos)}

    def load_state_tensors(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["rng"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])

"""Prepared splits as in-memory tensors: small image datasets never wait on a data loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class ImageSet:
    """uint8 images N x C x H x W and int64 labels (-1 when unlabeled), kept on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device))

    def batch(self, index: torch.Tensor) -> Batch:
        return Batch(self.images[index].float() / 255.0, self.labels[index])

    def head(self, n: int) -> ImageSet:
        return ImageSet(self.images[:n], self.labels[:n])

    def batches(self, batch_size: int):
        """Deterministic, in-order batches (for evaluation)."""
        for start in range(0, len(self), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(self)), device=self.images.device)
            yield self.batch(idx)


@dataclass
class Batch:
    """Images as floats in [0, 1], N x C x H x W, and labels."""

    x: torch.Tensor
    y: torch.Tensor


def load_split(prepared_dir: Path, split: str) -> ImageSet:
    with np.load(Path(prepared_dir) / f"{split}.npz") as npz:
        images = torch.from_numpy(np.ascontiguousarray(npz["images"].transpose(0, 3, 1, 2)))
        labels = torch.from_numpy(npz["labels"].astype(np.int64))
    return ImageSet(images, labels)

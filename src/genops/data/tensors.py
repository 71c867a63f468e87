"""Prepared splits as tensors: small sets in memory, large ones memory-mapped from the prepared .npz.

Small image datasets never wait on a data loader: the split is one uint8 tensor and a batch is an index
into it. Above `data.in_memory_max_mb` the split is read memory-mapped instead (pages come from the file
as batches touch them, and the OS may drop them again), with the same indices, so the same batches and
bit-identical training; each batch is converted to float on the device's side of a pinned-memory copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genops.data.npz import member_memmap


@dataclass
class ImageSet:
    """uint8 images N x C x H x W and int64 labels (-1 when unlabeled).

    In memory, both live on one device. Memory-mapped (`mapped`), the images stay a view of the file on the
    CPU and `device` is where batches go."""

    images: torch.Tensor
    labels: torch.Tensor
    mapped: bool = False
    device: torch.device = torch.device("cpu")

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> ImageSet:
        device = torch.device(device)
        if self.mapped:
            return ImageSet(self.images, self.labels, True, device)
        return ImageSet(self.images.to(device), self.labels.to(device), False, device)

    def batch(self, index: torch.Tensor) -> Batch:
        if not self.mapped:
            return Batch(self.images[index].float() / 255.0, self.labels[index])
        index = index.cpu()
        x, y = self.images[index].contiguous(), self.labels[index]
        if self.device.type == "cuda":
            x, y = x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return Batch(x.float() / 255.0, y)

    def head(self, n: int) -> ImageSet:
        return ImageSet(self.images[:n], self.labels[:n], self.mapped, self.device)

    def subset(self, n: int, seed: int) -> ImageSet:
        """At most n images, drawn without replacement by `seed` and kept in file order (a memory-mapped set is
        then read front to back); the set itself when it holds no more than n. Why: fits of a few moments
        converge long before a million images, and passing every one costs more than the training did."""
        if len(self) <= n:
            return self
        g = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=g)[:n].sort().values
        if self.mapped:
            return ImageSet(self.images[index].contiguous(), self.labels[index], False, torch.device("cpu")).to(
                self.device)
        return ImageSet(self.images[index.to(self.images.device)], self.labels[index.to(self.labels.device)],
                        False, self.device)

    def map_batches(self, batch_size: int, fn: Callable[[Batch], torch.Tensor | tuple[torch.Tensor, ...]]
                    ) -> tuple[torch.Tensor, ...]:
        """fn over the in-order batches, its outputs written into tensors preallocated for the whole set.

        Why not a list and torch.cat: thousands of small per-batch results kept alive between each forward
        pass's large temporaries pin the allocator's heap (measured: 1 GB of anonymous memory for 16 MB of
        results), which at a million images costs gigabytes."""
        outs: tuple[torch.Tensor, ...] = ()
        start = 0
        for b in self.batches(batch_size):
            res = fn(b)
            res = res if isinstance(res, tuple) else (res,)
            if not outs:
                outs = tuple(torch.empty((len(self), *r.shape[1:]), dtype=r.dtype, device=r.device) for r in res)
            for out, r in zip(outs, res, strict=True):
                out[start: start + r.shape[0]] = r
            start += res[0].shape[0]
        return outs

    def batches(self, batch_size: int):
        """Deterministic, in-order batches (for evaluation)."""
        for start in range(0, len(self), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(self)),
                               device="cpu" if self.mapped else self.images.device)
            yield self.batch(idx)


@dataclass
class Batch:
    """Images as floats in [0, 1], N x C x H x W, and labels."""

    x: torch.Tensor
    y: torch.Tensor


def split_arrays(prepared_dir: Path, split: str, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The split's (images N x H x W x C uint8, labels int64) arrays, read whole or memory-mapped."""
    path = Path(prepared_dir) / f"{split}.npz"
    if mmap:
        return member_memmap(path, "images"), member_memmap(path, "labels")
    with np.load(path, allow_pickle=False) as npz:
        return npz["images"], npz["labels"]


def load_split(prepared_dir: Path, split: str, in_memory_max_mb: float | None = None) -> ImageSet:
    """The split as an ImageSet: in memory, or memory-mapped when its file exceeds `in_memory_max_mb`."""
    path = Path(prepared_dir) / f"{split}.npz"
    mapped = in_memory_max_mb is not None and path.stat().st_size > in_memory_max_mb * 2**20
    images, labels = split_arrays(prepared_dir, split, mmap=mapped)
    if mapped:  # a strided N x C x H x W view of the file: no copy
        return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(np.asarray(labels, np.int64)),
                        mapped=True)
    return ImageSet(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
                    torch.from_numpy(labels.astype(np.int64)))

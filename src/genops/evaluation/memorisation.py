"""Memorisation: the share of generated samples that are near-copies of training images.

In pixel space (flattened images in [0, 1]), each sample's nearest-neighbour L2 distance to the training
split is compared with a threshold: the `evaluate.copy_quantile` quantile of the same distance for held-out
test images. Real unseen data is thus a "copy" at rate copy_quantile by construction (`test_copy_fraction`
reports it: the baseline); a model that reproduces its training images scores far more.

Up to `evaluate.copy_reference` training images are searched (a seeded subset of a larger split), read
through ImageSet batches (memory-mapped splits included) and compared with the queries in chunks, so the
memory used is a few distance blocks whatever the split size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.stats import binomtest

from genops.data.tensors import ImageSet


@dataclass
class CopyReport:
    metrics: dict[str, float]  # copy_fraction (+ _low/_high), copy_threshold, test_copy_fraction, copy_reference
    distances: torch.Tensor  # each sample's nearest-neighbour distance to the training images searched
    nearest: torch.Tensor  # ... and that training image's index in the split


def training_subset(n_train: int, cap: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of the training images searched: all of them, or a seeded subset of `cap`."""
    if cap is None or cap >= n_train:
        return torch.arange(n_train)
    return torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def _images(train: ImageSet, rows: torch.Tensor) -> torch.Tensor:
    """train[rows] as floats in [0, 1], through the split's batch access (memory-mapped or not)."""
    return train.batch(rows.cpu() if train.mapped else rows.to(train.images.device)).x


def nearest_training(queries: torch.Tensor, train: ImageSet, index: torch.Tensor, batch_size: int = 1024,
                     query_chunk: int = 2048, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image (N x C x H x W in [0, 1]): the L2 distance to its nearest image among train[index]
    and that image's index in `train`.

    The search uses |q|^2 + |t|^2 - 2 q.t in float32, block by block (train batches of `batch_size`, queries in
    chunks of `query_chunk`); the winner's distance is then recomputed directly in float64, so an exact copy
    is at distance 0."""
    device = torch.device(device)
    flat = queries.reshape(len(queries), -1).float().to(device)
    q_sq = flat.square().sum(1)
    best = torch.full((len(flat),), torch.inf, device=device)
    arg = torch.zeros(len(flat), dtype=torch.long, device=device)
    for start in range(0, len(index), batch_size):
        rows = index[start : start + batch_size]
        t = _images(train, rows).reshape(len(rows), -1).float().to(device)
        t_sq = t.square().sum(1)
        for q0 in range(0, len(flat), query_chunk):
            q = flat[q0 : q0 + query_chunk]
            d2 = torch.addmm(t_sq[None, :], q, t.T, alpha=-2).add_(q_sq[q0 : q0 + query_chunk, None])
            val, pos = d2.min(1)
            better = val < best[q0 : q0 + query_chunk]
            best[q0 : q0 + query_chunk] = torch.where(better, val, best[q0 : q0 + query_chunk])
            arg[q0 : q0 + query_chunk] = torch.where(better, rows.to(device)[pos], arg[q0 : q0 + query_chunk])
    arg = arg.cpu()
    dist = torch.empty(len(flat), dtype=torch.float64)
    for q0 in range(0, len(flat), query_chunk):  # exact distances of the winners
        nn = _images(train, arg[q0 : q0 + query_chunk]).reshape(-1, flat.shape[1]).double().cpu()
        dist[q0 : q0 + query_chunk] = (flat[q0 : q0 + query_chunk].double().cpu() - nn).norm(dim=1)
    return dist, arg


def wilson_interval(successes: int, n: int, level: float) -> tuple[float, float]:
    """Wilson score interval of a proportion (sensible at 0 and 1, unlike the normal approximation)."""
    ci = binomtest(int(successes), n).proportion_ci(confidence_level=level, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def copy_fraction(samples: torch.Tensor, test: torch.Tensor, train: ImageSet, quantile: float = 0.01,
                  reference: int | None = 20000, seed: int = 0, level: float = 0.95, batch_size: int = 1024,
                  device: torch.device | str = "cpu") -> CopyReport:
    """Near-copies of training images among `samples`, judged against held-out `test` images (both N x C x H x W
    in [0, 1]); `reference` caps the training images searched (seeded subset), `level` is copy_fraction's
    (Wilson) interval level."""
    index = training_subset(len(train), reference, seed)
    dist, nearest = nearest_training(torch.cat([samples.float().cpu(), test.float().cpu()]), train, index,
                                     batch_size, device=device)
    fake_d, test_d = dist[: len(samples)], dist[len(samples) :]
    threshold = float(torch.quantile(test_d, quantile))
    copies = int((fake_d <= threshold).sum())
    low, high = wilson_interval(copies, len(samples), level)
    metrics = {"copy_fraction": copies / len(samples), "copy_fraction_low": low, "copy_fraction_high": high,
               "copy_threshold": threshold, "test_copy_fraction": float((test_d <= threshold).double().mean()),
               "copy_reference": float(len(index))}
    return CopyReport(metrics, fake_d, nearest[: len(samples)])


def closest_pairs(samples: torch.Tensor, report: CopyReport, train: ImageSet, n: int = 8) -> torch.Tensor:
    """The n samples nearest to a training image (first row) above those training images (second row)."""
    order = report.distances.argsort()[: min(n, len(samples))]
    nearest = _images(train, report.nearest[order]).cpu()
    return torch.cat([samples[order].float().cpu(), nearest.to(samples.dtype)])

"""Memorisation: a copying "model" is caught, held-out data scores the configured quantile, the search is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genops.data.tensors import ImageSet, load_split
from genops.evaluation.memorisation import (
    closest_pairs,
    copy_fraction,
    nearest_training,
    training_subset,
    wilson_interval,
)


def _blobs(n: int, seed: int, size: int = 12) -> torch.Tensor:
    """uint8 N x 1 x size x size images: a few random Gaussian blobs each (varied, like a small image set)."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).float()
    centres = torch.rand(n, 3, 2, 1, 1, generator=gen) * size
    widths = 1 + 2 * torch.rand(n, 3, 1, 1, generator=gen)
    img = torch.exp(-((grid[None, None] - centres) ** 2).sum(2) / widths**2).sum(1).clamp(0, 1)
    return (img[:, None] * 255).round().to(torch.uint8)


def _set(images: torch.Tensor) -> ImageSet:
    return ImageSet(images, torch.full((len(images),), -1, dtype=torch.long))


TRAIN, TEST, OTHER = _set(_blobs(600, 0)), _blobs(400, 1).float() / 255, _blobs(200, 2).float() / 255


def test_a_model_that_returns_training_images_is_all_copies_and_held_out_data_scores_the_quantile():
    copier = TRAIN.batch(torch.arange(0, 400, 2)).x  # 200 training images, "generated"
    report = copy_fraction(copier, TEST, TRAIN, quantile=0.05)
    assert report.metrics["copy_fraction"] == 1.0 and report.metrics["copy_fraction_low"] > 0.95
    assert torch.equal(report.nearest, torch.arange(0, 400, 2)) and report.distances.max() == 0.0
    assert report.metrics["test_copy_fraction"] == pytest.approx(0.05, abs=0.005)  # by construction
    assert report.metrics["copy_threshold"] > 0 and report.metrics["copy_reference"] == 600

    fresh = copy_fraction(OTHER, TEST, TRAIN, quantile=0.05)  # unseen images of the same kind: the baseline
    assert fresh.metrics["copy_fraction"] < 0.15
    assert fresh.metrics["copy_fraction_low"] <= fresh.metrics["copy_fraction"] <= fresh.metrics["copy_fraction_high"]
    half = torch.cat([copier[:100], OTHER[:100]])
    assert copy_fraction(half, TEST, TRAIN, quantile=0.05).metrics["copy_fraction"] == pytest.approx(0.5, abs=0.08)


def test_nearest_neighbours_are_exact_whatever_the_chunks_and_on_a_memory_mapped_split(tmp_path):
    queries = torch.cat([OTHER[:30], TRAIN.batch(torch.tensor([5, 77])).x])
    flat_train = TRAIN.images.reshape(600, -1).double() / 255
    brute = torch.cdist(queries.reshape(len(queries), -1).double(), flat_train)
    dist, idx = nearest_training(queries, TRAIN, torch.arange(600))
    assert torch.equal(idx, brute.argmin(1)) and torch.allclose(dist, brute.min(1).values, atol=1e-9)
    small = nearest_training(queries, TRAIN, torch.arange(600), batch_size=7, query_chunk=5)
    assert torch.equal(small[1], idx) and torch.equal(small[0], dist)

    np.savez(tmp_path / "train.npz", images=TRAIN.images.permute(0, 2, 3, 1).numpy(), labels=TRAIN.labels.numpy())
    mapped = load_split(tmp_path, "train", in_memory_max_mb=0)
    assert mapped.mapped
    on_disk = nearest_training(queries, mapped, torch.arange(600), batch_size=64)
    assert torch.equal(on_disk[1], idx) and torch.equal(on_disk[0], dist)


def test_the_searched_training_images_are_a_seeded_subset_and_the_picture_pairs_the_closest():
    sub = training_subset(600, 100, seed=3)
    assert len(sub) == 100 and torch.equal(sub, training_subset(600, 100, seed=3)) and torch.equal(sub, sub.sort()[0])
    assert not torch.equal(sub, training_subset(600, 100, seed=4))
    assert torch.equal(training_subset(600, None, 0), torch.arange(600))
    assert torch.equal(training_subset(600, 10_000, 0), torch.arange(600))
    capped = copy_fraction(OTHER, TEST, TRAIN, reference=100, seed=3)
    assert capped.metrics["copy_reference"] == 100 and set(capped.nearest.tolist()) <= set(sub.tolist())

    samples = torch.cat([OTHER[:10], TRAIN.batch(torch.tensor([9])).x])
    report = copy_fraction(samples, TEST, TRAIN)
    pairs = closest_pairs(samples, report, TRAIN)
    assert pairs.shape == (16, 1, 12, 12)
    assert torch.equal(pairs[0], samples[10]) and torch.equal(pairs[8], samples[10])  # the copy, next to itself


def test_wilson_interval():
    assert wilson_interval(0, 100, 0.95)[0] == 0.0 and 0.02 < wilson_interval(0, 100, 0.95)[1] < 0.05
    low, high = wilson_interval(50, 100, 0.95)
    assert low == pytest.approx(0.404, abs=1e-3) and high == pytest.approx(0.596, abs=1e-3)

"""Splits above data.in_memory_max_mb are memory-mapped, and train exactly as the in-memory split does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genops.data.npz import member_memmap
from genops.data.spec import DataSpec
from genops.data.tensors import load_split
from genops.models.registry import build_family
from genops.training.loop import LoopSettings, train


@pytest.fixture
def prepared(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", images=images, labels=np.arange(200, dtype=np.int64) % 4)
    return tmp_path, images


def test_a_split_above_the_threshold_is_mapped_and_batches_identically(prepared):
    folder, images = prepared
    in_memory, mapped = load_split(folder, "train", 1.0), load_split(folder, "train", 0.0)
    assert not in_memory.mapped and mapped.mapped
    assert isinstance(member_memmap(folder / "train.npz", "images"), np.memmap)
    idx = torch.tensor([5, 0, 199, 42])
    a, b = in_memory.batch(idx), mapped.batch(idx)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and b.x.is_contiguous()
    assert torch.equal(b.x[0], torch.from_numpy(images[5]).permute(2, 0, 1).float() / 255)
    assert torch.equal(torch.cat([x.x for x in mapped.batches(64)]), torch.cat([x.x for x in in_memory.batches(64)]))
    assert mapped.to("cpu").mapped  # moving a mapped set only says where batches go


def test_training_on_a_mapped_split_gives_identical_weights(prepared, tmp_path):
    folder, _ = prepared
    spec = DataSpec(8, 8, 3, 4)
    cfg = LoopSettings(steps=6, batch_size=32, lr=1e-3, checkpoint_every=100, log_every=100, seed=1,
                       max_loss=1e8, progress=False)
    weights = []
    for limit in (1.0, 0.0):
        torch.manual_seed(0)
        family = build_family("vae", spec, {"latent_dim": 4, "widths": [8, 16]})
        train(family, load_split(folder, "train", limit), cfg, tmp_path / f"w{limit}", "fp", torch.device("cpu"))
        weights.append(family.state_dict())
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_a_compressed_archive_cannot_be_mapped_and_says_so(tmp_path):
    np.savez_compressed(tmp_path / "train.npz", images=np.zeros((4, 2, 2, 1), np.uint8), labels=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="images.npy is compressed"):
        load_split(tmp_path, "train", 0.0)


def test_subset_is_seeded_in_file_order_and_the_whole_set_when_small():
    import torch

    from genops.data.tensors import ImageSet

    images = torch.arange(50, dtype=torch.uint8).reshape(50, 1, 1, 1).expand(50, 1, 2, 2).contiguous()
    labels = torch.arange(50)
    full = ImageSet(images, labels)
    assert full.subset(50, seed=0) is full
    a, b, c = full.subset(10, seed=0), full.subset(10, seed=0), full.subset(10, seed=1)
    assert len(a) == 10 and torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)
    assert torch.equal(a.labels, a.labels.sort().values) and len(set(a.labels.tolist())) == 10
    assert torch.equal(a.images[:, 0, 0, 0].long(), a.labels)  # images and labels stay paired
    mapped = ImageSet(images, labels, mapped=True).subset(10, seed=0)
    assert not mapped.mapped and torch.equal(mapped.labels, a.labels) and torch.equal(mapped.images, a.images)

"""prepare on data we have not seen: image folders of any size and colour, broken files, .npz arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genops.config import validate
from genops.errors import GenopsError
from genops.stages.prepare import prepare_stage


def _params(source, **data):
    return validate({"seed": 0, "data": {"source": str(source), "test_fraction": 0.25, "max_size": 32, **data}},
                    "test params")


def test_labeled_rgb_folder_of_mixed_sizes_with_a_broken_file(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(6):
            h, w = (48, 64) if i % 2 else (40, 40)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / "src" / cls / f"{i}.png")
    (tmp_path / "src" / "dogs" / "broken.jpg").write_bytes(b"not a jpeg")
    result = prepare_stage(_params(tmp_path / "src"), tmp_path, tmp_path / "out")
    assert (result.spec.channels, result.spec.num_classes) == (3, 2)
    assert result.spec.class_names == ["cats", "dogs"]
    assert max(result.spec.height, result.spec.width) == 32  # the common size, shrunk to max_size
    assert result.n_dropped == 1 and result.n_train + result.n_test == 12
    meta = (tmp_path / "out" / "metadata.csv").read_text()
    assert "broken.jpg" in meta
    with np.load(tmp_path / "out" / "train.npz") as npz:
        assert npz["images"].dtype == np.uint8 and npz["images"].shape[1:] == (result.spec.height,
                                                                                result.spec.width, 3)


def test_flat_grayscale_folder_is_unlabeled(tmp_path):
    for i in range(8):
        Image.fromarray(np.full((16, 16), i * 30, np.uint8), "L").save(tmp_path / f"{i}.png")
    result = prepare_stage(_params(tmp_path), tmp_path, tmp_path / "out")
    assert (result.spec.channels, result.spec.num_classes, result.spec.height) == (1, 0, 16)
    with np.load(tmp_path / "out" / "test.npz") as npz:
        assert (npz["labels"] == -1).all()


def test_npz_float_images_and_same_seed_same_split(tmp_path):
    x = np.random.default_rng(0).random((40, 3, 10, 10)).astype(np.float32)  # N x C x H x W floats in [0, 1]
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(40) % 4)
    a = prepare_stage(_params(tmp_path / "d.npz", test_fraction=0.3), tmp_path, tmp_path / "a")
    b = prepare_stage(_params(tmp_path / "d.npz", test_fraction=0.3), tmp_path, tmp_path / "b")
    assert a.data_hash == b.data_hash and a.spec.shape == (3, 10, 10) and a.spec.num_classes == 4
    spec = json.loads((tmp_path / "a" / "spec.json").read_text())
    assert spec["n_test"] == 12  # 30 % of each of 4 classes of 10


def test_bundled_digits_and_a_bad_source_name(tmp_path):
    result = prepare_stage(_params("digits"), tmp_path, tmp_path / "out")
    assert result.spec.shape == (1, 8, 8) and result.n_train + result.n_test == 1797
    with pytest.raises(GenopsError, match="data.source='nope'"):
        prepare_stage(_params("nope"), tmp_path, tmp_path / "x")

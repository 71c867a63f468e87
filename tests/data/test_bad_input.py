"""Bad input, file by file: each gets a clear error or a named repair, and validation.strict refuses repairs."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from genops.config import load_params, validate
from genops.errors import GenopsError
from genops.stages.prepare import prepare_stage
from genops.validation.suite import ValidationFailed
from genops.validation.suite import validate as run_suite


def _params(source, **sections):
    data = {"source": str(source), "test_fraction": 0.25, "max_size": 32}
    data.update(sections.pop("data", {}))
    return validate({"seed": 0, "data": data, **sections}, "test params")


def _folder(tmp_path, n=12, size=16):
    """n readable grey 16 x 16 PNGs in two class folders."""
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = tmp_path / "src" / ("a" if i % 2 else "b")
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), "L").save(cls / f"{i}.png")
    return tmp_path / "src"


def _prepare(tmp_path, src, **sections):
    return prepare_stage(_params(src, **sections), tmp_path, tmp_path / "out")


def _repair_of(tmp_path, name):
    import pandas as pd

    meta = pd.read_csv(tmp_path / "out" / "metadata.csv", keep_default_na=False)
    return meta.set_index("file").loc[name, "repair"]


def test_zero_byte_and_fake_image_files_are_skipped_and_named(tmp_path, caplog):
    src = _folder(tmp_path)
    (src / "a" / "empty.png").write_bytes(b"")
    (src / "b" / "notes.jpg").write_text("this is text, not a JPEG")
    with caplog.at_level(logging.WARNING):
        result = _prepare(tmp_path, src)
    assert result.n_dropped == 2 and sorted(result.repairs["skipped"]) == ["a/empty.png", "b/notes.jpg"]
    assert "skipped 2 of 14 images (a/empty.png, b/notes.jpg" in caplog.text
    assert _repair_of(tmp_path, "a/empty.png").startswith("skipped (UnidentifiedImageError")
    saved = json.loads((tmp_path / "out" / "repairs.json").read_text())
    assert saved["skipped"]["count"] == 2


def test_images_of_another_size_are_resized_and_named_and_strict_refuses_them(tmp_path, caplog):
    src = _folder(tmp_path)
    Image.fromarray(np.zeros((40, 24), np.uint8), "L").save(src / "a" / "big.png")
    Image.fromarray(np.full((1, 1), 200, np.uint8), "L").save(src / "b" / "dot.png")  # 1 x 1 among 16 x 16
    with caplog.at_level(logging.WARNING):
        result = _prepare(tmp_path, src)
    assert sorted(result.repairs["resized"]) == ["a/big.png", "b/dot.png"]
    assert _repair_of(tmp_path, "a/big.png") == "resized (40x24 -> 16x16)"
    assert "resized 2 of 14 images" in caplog.text
    params = _params(src, validation={"min_rows": 1, "min_per_class": 1, "strict": True, "data_docs": False})
    with pytest.raises(ValidationFailed, match=r"2 of 14 files needed a repair, which validation.strict refuses.*"
                                               r"a/big.png \(resized \(40x24 -> 16x16\)\)"):
        run_suite(params.validation, tmp_path / "out", tmp_path / "report")
    report = json.loads((tmp_path / "report" / "result.json").read_text())
    assert report["repairs"]["resized"]["files"] == ["a/big.png", "b/dot.png"]
    # Not strict: the same data passes, the repairs still on record.
    lenient = _params(src, validation={"min_rows": 1, "min_per_class": 1, "data_docs": False})
    assert run_suite(lenient.validation, tmp_path / "out", tmp_path / "report").success


def test_only_one_pixel_images_is_a_clear_error(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((1, 1), i, np.uint8), "L").save(tmp_path / f"{i}.png")
    with pytest.raises(GenopsError, match=r"prepared at 1x1, below the 8x8 the networks need.*data.image_size"):
        prepare_stage(_params(tmp_path), tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_decompression_bomb_is_refused_with_pils_limit_kept(tmp_path, monkeypatch):
    """PIL raises on more than 2 x MAX_IMAGE_PIXELS; the limit is lowered here so a small file plays the bomb."""
    src = _folder(tmp_path)
    Image.fromarray(np.zeros((64, 64), np.uint8), "L").save(src / "a" / "bomb.png")  # 4096 px > 2 x 1000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    result = _prepare(tmp_path, src)
    assert result.repairs["skipped"] == ["a/bomb.png"]
    assert "DecompressionBombError" in _repair_of(tmp_path, "a/bomb.png")


def test_16_bit_palette_rgba_and_cmyk_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ramp = np.linspace(0, 65535, 16 * 16).astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(src / "deep.png")  # 16-bit grey: scaled by its full range, not clipped
    Image.fromarray(np.full((16, 16), 100, np.uint8), "L").convert("P").save(src / "palette.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    Image.fromarray(rgba, "RGBA").save(src / "alpha.png")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(src / "print.jpg")  # CMYK red
    result = _prepare(tmp_path, src)
    assert result.n_dropped == 0 and result.spec.channels == 3
    assert _repair_of(tmp_path, "alpha.png") == "alpha removed"
    assert _repair_of(tmp_path, "print.jpg") == "CMYK converted to RGB"
    assert _repair_of(tmp_path, "palette.png") == "" and _repair_of(tmp_path, "deep.png") == ""
    with np.load(tmp_path / "out" / "train.npz") as npz, np.load(tmp_path / "out" / "test.npz") as t:
        images = np.concatenate([npz["images"], t["images"]])
    assert images.max() == 255 and images.min() == 0  # the 16-bit ramp spans the 8-bit range


def test_symlink_loop_in_the_folder_does_not_hang_or_crash(tmp_path):
    src = _folder(tmp_path)
    os.symlink(src, src / "a" / "loop")  # a folder inside a class folder pointing back up
    os.symlink(src / "b" / "self.png", src / "b" / "self.png")  # a link to itself
    result = _prepare(tmp_path, src)
    assert result.n_train + result.n_test == 12


def test_npz_with_string_labels_reads_them_as_class_names(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (40, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.array(["cat", "dog"] * 20))
    result = _prepare(tmp_path, tmp_path / "d.npz")
    assert result.spec.class_names == ["cat", "dog"] and result.spec.num_classes == 2


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path):
    x = np.empty(4, dtype=object)
    x[:] = [np.zeros((8, 8))] * 4
    np.savez(tmp_path / "d.npz", images=x)  # allow_pickle would be needed to read it back
    with pytest.raises(GenopsError, match=r"d.npz: array 'images' holds Python objects, which genops does not "
                                          r"unpickle"):
        _prepare(tmp_path, tmp_path / "d.npz")


def test_npz_that_is_not_a_zip_is_a_clear_error(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"\x00" * 100)
    with pytest.raises(GenopsError, match=r"d.npz: not a readable .npz file"):
        _prepare(tmp_path, tmp_path / "d.npz")


def test_params_yaml_that_is_not_yaml_names_the_file_and_line(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 0\ndata: [unclosed\n  source: mnist5k\n")
    with pytest.raises(GenopsError, match=r"(?s)params.yaml: not valid YAML.*line 2"):
        load_params(tmp_path)

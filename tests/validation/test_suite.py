"""The validate stage runs a real Great Expectations suite: clean data passes, each defect is named."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genops.config import validate as validate_params
from genops.config.sections import ValidationConfig
from genops.errors import GenopsError, ValidationFailed
from genops.validation.suite import ValidationReport, validate

N, K, H, W, C = 200, 4, 8, 8, 1
PARAMS = {"min_rows": 100, "min_per_class": 10, "max_duplicate_fraction": 0.05, "max_unreadable_fraction": 0.02}
CONFIG = ValidationConfig(**PARAMS)


def clean_metadata(n: int = N, k: int = K) -> pd.DataFrame:
    """What prepare writes for n readable uint8 images of k balanced classes, every 5th one in test."""
    return pd.DataFrame({
        "index": range(n),
        "split": ["test" if i % 5 == 0 else "train" for i in range(n)],
        "file": [f"img_{i:04d}.png" for i in range(n)],
        "readable": True,
        "height": H, "width": W, "channels": C,
        "dtype": "uint8",
        "raw_min": 0.0, "raw_max": 255.0, "value_max_allowed": 255.0,
        "nonfinite": 0,
        "label": [i % k for i in range(n)],
        "error": "",
        "prep_height": H, "prep_width": W, "prep_channels": C,
        "sha1": [hashlib.sha1(str(i).encode()).hexdigest() for i in range(n)],
    })


def make_unreadable(df: pd.DataFrame, rows: list[int]) -> None:
    """Mark rows the way prepare marks a file it could not decode."""
    df["raw_min"] = df["raw_min"].astype(float)
    df.loc[rows, ["readable", "split", "dtype", "sha1", "error"]] = [False, "dropped", "", "", "cannot identify image"]
    df.loc[rows, ["height", "width", "channels", "prep_height", "prep_width", "prep_channels"]] = -1
    df.loc[rows, ["raw_min", "raw_max"]] = np.nan


def write_prepared(folder: Path, df: pd.DataFrame, k: int = K) -> Path:
    """metadata.csv, spec.json and train/test.npz that agree with each other (as prepare writes them)."""
    folder.mkdir(parents=True)
    df.to_csv(folder / "metadata.csv", index=False)
    counts = {}
    for split in ("train", "test"):
        rows = df[df["readable"] & (df["split"] == split)]
        counts[split] = len(rows)
        np.savez(folder / f"{split}.npz", images=np.zeros((len(rows), H, W, C), np.uint8),
                 labels=rows["label"].to_numpy(np.int64))
    spec = {"height": H, "width": W, "channels": C, "num_classes": k, "class_names": [str(i) for i in range(k)],
            "n_train": counts["train"], "n_test": counts["test"], "source": "test", "data_hash": "0"}
    (folder / "spec.json").write_text(json.dumps(spec))
    return folder


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("clean") / "prepared", clean_metadata())


@pytest.fixture(scope="module")
def clean_run(clean_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ValidationReport, Path]:
    report_dir = tmp_path_factory.mktemp("report") / "validation"
    return validate(CONFIG, clean_dir, report_dir), report_dir


def test_clean_data_passes_and_writes_report_and_docs(clean_run: tuple[ValidationReport, Path]) -> None:
    report, report_dir = clean_run
    assert report.success and report.failures == [] and report.n_rows == N
    result = json.loads((report_dir / "result.json").read_text())
    assert result["success"] is True and result["n_rows"] == N
    names = {e["check"] for e in result["expectations"]}
    assert {"nonfinite", "unreadable", "label_in_classes", "min_per_class", "duplicates", "row_count",
            "prep_height", "prep_width", "prep_channels", "value_min", "value_max", "dtype"} <= names
    assert all(e["success"] for e in result["expectations"])
    assert (report_dir / "docs" / "index.html").is_file()
    assert not list(report_dir.glob(".*"))  # no temp files left behind


def test_result_json_is_byte_identical_across_runs(clean_dir: Path, clean_run: tuple, tmp_path: Path) -> None:
    _, first_dir = clean_run
    validate(ValidationConfig(**PARAMS, data_docs=False), clean_dir, tmp_path / "again")
    assert (tmp_path / "again" / "result.json").read_bytes() == (first_dir / "result.json").read_bytes()
    assert not (tmp_path / "again" / "docs").exists()


def _nan_pixels(df: pd.DataFrame) -> None:
    df.loc[[3, 17], "nonfinite"] = 12


def _unreadable(df: pd.DataFrame) -> None:
    make_unreadable(df, list(range(0, 200, 20)))  # 10 of 200 = 5% > 2%


def _foreign_label(df: pd.DataFrame) -> None:
    df.loc[6, "label"] = 7


def _small_class(df: pd.DataFrame) -> None:
    rows = df.index[df["label"] == 3][4:]
    df.loc[rows, "label"] = 0  # class 3 keeps 4 images


def _duplicates(df: pd.DataFrame) -> None:
    df.loc[100:119, "sha1"] = df.loc[0:19, "sha1"].to_numpy()  # 20 of 200 = 10% > 5%


def _bad_shape(df: pd.DataFrame) -> None:
    df.loc[9, "prep_width"] = W + 1


def _out_of_range(df: pd.DataFrame) -> None:
    df.loc[11, "raw_max"] = 300.0


CASES: dict[str, tuple[Callable[[pd.DataFrame], None], dict, list[str]]] = {
    "nan": (_nan_pixels, {}, ["nonfinite", "NaN/inf", "2 of 200", "img_0003.png", "img_0017.png"]),
    "unreadable": (_unreadable, {}, ["unreadable", "10 of 200", "5.0%", "img_0000.png", "cannot identify image"]),
    "label": (_foreign_label, {}, ["label", "outside the 4 declared classes", "img_0006.png (label 7)"]),
    "small_class": (_small_class, {}, ["n_images", "too few", "class 3: 4", "at least 10"]),
    "duplicates": (_duplicates, {}, ["sha1", "20 of 200", "10.0%", "img_0100.png"]),
    "too_few_rows": (lambda df: None, {"min_rows": 500}, ["expect_table_row_count_to_be_between", "200 readable",
                                                          "expected 500 to"]),
    "shape": (_bad_shape, {}, ["prep_width", "width != 8", "img_0009.png (width 9)"]),
    "range": (_out_of_range, {}, ["raw_max", "full scale", "img_0011.png (max 300 > 255)"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_defect_is_rejected_with_a_message_naming_it(case: str, tmp_path: Path) -> None:
    mutate, overrides, wanted = CASES[case]
    df = clean_metadata()
    mutate(df)
    prepared = write_prepared(tmp_path / "prepared", df)
    report_dir = tmp_path / "validation"
    with pytest.raises(ValidationFailed) as info:
        validate(ValidationConfig(**{**PARAMS, **overrides, "data_docs": False}), prepared, report_dir)
    message = str(info.value)
    for text in wanted:
        assert text in message, f"{text!r} not in:\n{message}"
    assert len(message.splitlines()) <= 4  # only the defect at hand is reported
    result = json.loads((report_dir / "result.json").read_text())
    assert result["success"] is False
    assert [e for e in result["expectations"] if not e["success"]]
    assert info.value.report.failures  # type: ignore[attr-defined]


def test_failed_run_still_writes_docs(tmp_path: Path) -> None:
    df = clean_metadata()
    _nan_pixels(df)
    prepared = write_prepared(tmp_path / "prepared", df)
    with pytest.raises(ValidationFailed):
        validate(CONFIG, prepared, tmp_path / "validation")
    assert (tmp_path / "validation" / "docs" / "index.html").is_file()
    failed = [e for e in json.loads((tmp_path / "validation" / "result.json").read_text())["expectations"]
              if not e["success"]]
    assert [e["check"] for e in failed] == ["nonfinite"]
    assert failed[0]["examples"] == ["img_0003.png", "img_0017.png"] and failed[0]["unexpected_count"] == 2


def test_params_defaults_and_typos() -> None:
    p = ValidationConfig()
    assert (p.min_rows, p.max_rows, p.min_per_class, p.data_docs) == (100, 5_000_000, 10, True)
    loaded = validate_params({"validation": {"max_duplicate_fraction": "0.1"}}, "p")
    assert loaded.validation.max_duplicate_fraction == 0.1
    with pytest.raises(GenopsError, match="validation.min_row: unknown key; did you mean min_rows"):
        validate_params({"validation": {"min_row": 5}}, "p")
    with pytest.raises(GenopsError, match="validation.max_unreadable_fraction"):
        validate_params({"validation": {"max_unreadable_fraction": 1.5}}, "p")
    with pytest.raises(GenopsError, match="min_rows .* must not exceed max_rows"):
        validate_params({"validation": {"min_rows": 10, "max_rows": 5}}, "p")

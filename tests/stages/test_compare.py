"""The comparison report is rebuilt from metrics files alone."""

from __future__ import annotations

import json
import shutil

from genops.config import validate
from genops.stages.compare import compare_stage


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_report_regenerates_from_metrics_files_alone(tmp_path):
    for fam, fid in (("autoencoder", 40.0), ("vae", 12.5)):
        _write(tmp_path / "metrics" / f"{fam}.json", {"fid": fid, "kid_mean": 0.01, "recall": 0.5, "coverage": 0.4,
                                                      "modes_covered": 9, "train_images_per_s": 300.0,
                                                      "sample_images_per_s_torch": 2000.0})
        _write(tmp_path / "metrics" / "export" / f"{fam}.json", {"sample_images_per_s_onnx": 3000.0})
    # vae's evaluation has a bootstrap interval and a copy fraction; autoencoder's (an older file) has neither.
    vae = json.loads((tmp_path / "metrics" / "vae.json").read_text())
    _write(tmp_path / "metrics" / "vae.json", {**vae, "fid_low": 11.9, "fid_high": 13.25, "bootstrap_samples": 100,
                                               "bootstrap_level": 0.95, "copy_fraction": 0.003,
                                               "test_copy_fraction": 0.01})
    _write(tmp_path / "metrics" / "evaluator.json", {"feature_space": "classifier", "test_accuracy": 0.98,
                                                     "floor_fid": 0.8, "floor_recall": 0.9, "n_floor": 1000,
                                                     "n_reference": 2000})
    params = validate({"families": ["autoencoder", "vae"], "stacked": {}}, "test params")
    result = compare_stage(params, tmp_path)
    report = (tmp_path / "reports" / "comparison" / "comparison.md").read_text()
    assert "| vae | **12.50** [11.90, 13.25] |" in report and "| autoencoder | 40.00 |" in report
    assert "| **9** | 0.003 |" in report and "| **9** | – |" in report  # copies: vae measured, autoencoder not
    assert "95% bootstrap interval" in report and "held-out test images themselves score 0.010" in report
    assert "*real data (floor)* | 0.80" in report and "test accuracy 0.9800" in report
    assert (tmp_path / "reports" / "comparison" / "metrics.png").stat().st_size > 0
    assert result["families"] == ["autoencoder", "vae"]
    shutil.rmtree(tmp_path / "reports")
    compare_stage(params, tmp_path)
    assert (tmp_path / "reports" / "comparison" / "comparison.md").read_text() == report


def test_sampling_variants_become_a_quality_speed_table(tmp_path):
    _write(tmp_path / "metrics" / "diffusion.json", {"fid": 5.0, "ddim10_fid": 9.0, "ddim10_recall": 0.4,
                                                     "ddim10_images_per_s": 50.0, "ddpm_fid": 4.0,
                                                     "ddpm_recall": 0.6, "ddpm_images_per_s": 0.5})
    compare_stage(validate({"families": ["diffusion"], "stacked": {}}, "test params"), tmp_path)
    report = (tmp_path / "reports" / "comparison" / "comparison.md").read_text()
    assert "| diffusion | ddim10 | 9.00 | 0.400 | 50.0 |" in report
    assert report.index("ddim10 |") < report.index("ddpm |")  # fastest first
    assert (tmp_path / "reports" / "comparison" / "quality_vs_speed.png").is_file()


def test_compute_table_groups_snapshots_by_their_nominal_fraction():
    """Snapshot steps are round(fraction x steps): 0.2498 of one family and 0.2502 of another are one column."""
    from genops.evaluation.comparison_table import compute_table

    def curve(steps, fids):
        return [{"step": s, "fraction": s / steps, "flops": s * 1e9, "fid": f, "recall": 0.5} for s, f in fids]

    rows = {"a": {"curve": curve(1109, [(277, 30.0), (555, 20.0), (1109, 10.0)]), "budget": {"steps": 1109}},
            "b": {"curve": curve(354, [(88, 90.0), (177, 60.0), (354, 45.0)]), "budget": {"steps": 354}}}
    head, _, line_a, line_b = compute_table(rows)
    assert head.count("FID at") == 3 and "FID at 25%" in head and "FID at 50%" in head
    assert "| 30.0 | 20.0 | 10.0 | +50% |" in line_a and "| 90.0 | 60.0 | 45.0 | +25% |" in line_b

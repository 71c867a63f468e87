"""Sample metrics behave as their papers say, and agree with an independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from genops.config.sections import EvaluateConfig
from genops.evaluation.sample_metrics import (
    all_metrics,
    classifier_score,
    density_coverage,
    fid_kid,
    modes_covered,
    precision_recall,
)


def _gauss(n, dim=8, shift=0.0, scale=1.0, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale + shift


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_of_a_set_against_itself_is_zero():
    x = _gauss(600)
    assert abs(fid_kid(x, x, kid_subset_size=200)["fid"]) < 1e-3


def test_fid_matches_scipy_sqrtm_reference():
    a, b = _gauss(700, seed=1), _gauss(500, shift=0.3, scale=1.2, seed=2)
    ours = fid_kid(a, b, kid_subset_size=200)["fid"]
    assert ours == pytest.approx(_scipy_fid(a.numpy(), b.numpy()), rel=1e-4)


def test_kid_is_near_zero_for_same_distribution_and_grows_with_shift():
    same = fid_kid(_gauss(500, seed=3), _gauss(500, seed=4), kid_subset_size=200)["kid_mean"]
    shifted = fid_kid(_gauss(500, seed=3), _gauss(500, shift=1.0, seed=4), kid_subset_size=200)["kid_mean"]
    assert abs(same) < 0.01 < shifted


def test_precision_recall_separate_fidelity_from_diversity():
    real = _gauss(1000, seed=5)
    same = precision_recall(real, _gauss(1000, seed=6))
    narrow = precision_recall(real, _gauss(1000, scale=0.3, seed=6))  # faithful but not diverse
    wide = precision_recall(real, _gauss(1000, scale=2.5, seed=6))  # diverse but unfaithful
    assert same["precision"] > 0.6 and same["recall"] > 0.6
    assert narrow["precision"] > 0.95 and narrow["recall"] < same["recall"] - 0.3
    assert wide["recall"] > 0.95 and wide["precision"] < same["precision"] - 0.3


def test_mode_collapse_scores_low_recall_coverage_and_few_modes():
    centres = torch.randn(10, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 6
    labels = torch.arange(1000) % 10
    real = centres[labels] + _gauss(1000, seed=7)
    onehot = torch.nn.functional.one_hot(labels, 10).double() * 0.9 + 0.01
    cfg = EvaluateConfig(kid_subset_size=200)
    healthy = all_metrics(real, centres[labels] + _gauss(1000, seed=8), onehot, cfg, seed=0)
    collapsed_feats = centres[torch.zeros(1000, dtype=torch.long)] + _gauss(1000, seed=8)
    collapsed_probs = torch.nn.functional.one_hot(torch.zeros(1000, dtype=torch.long), 10).double() * 0.9 + 0.01
    collapsed = all_metrics(real, collapsed_feats, collapsed_probs, cfg, seed=0)
    assert healthy["modes_covered"] == 10 and collapsed["modes_covered"] == 1
    assert collapsed["recall"] < 0.2 < healthy["recall"]
    assert collapsed["coverage"] < 0.2 < healthy["coverage"]
    assert collapsed["classifier_score"] < 1.5 < healthy["classifier_score"]
    assert collapsed["fid"] > 10 * max(healthy["fid"], 1.0)


def test_density_is_about_one_for_matching_distributions():
    real = _gauss(800, seed=9)
    dc = density_coverage(real, _gauss(800, seed=10))
    assert 0.7 < dc["density"] < 1.3 and dc["coverage"] > 0.8


def test_classifier_score_and_modes_formulas():
    uniform_confident = torch.eye(4).repeat(25, 1)
    assert classifier_score(uniform_confident) == pytest.approx(4.0, rel=1e-6)
    assert classifier_score(torch.full((10, 4), 0.25)) == pytest.approx(1.0)
    m = modes_covered(torch.eye(4)[torch.tensor([0] * 50 + [1] * 45 + [2] * 5)], min_share=0.5)
    assert m["modes_covered"] == 2 and m["largest_mode_share"] == pytest.approx(0.5)

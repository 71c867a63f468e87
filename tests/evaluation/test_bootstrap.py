"""Bootstrap intervals of the sample metrics: right per resample, around the headline value, seeded, honest."""

from __future__ import annotations

import pytest
import torch

from genops.config.sections import EvaluateConfig
from genops.evaluation.bootstrap import BOUNDS, bootstrap_intervals, replicates, resample_counts
from genops.evaluation.sample_metrics import all_metrics, density_coverage, fid_kid, precision_recall

CFG = EvaluateConfig(kid_subsets=10, kid_subset_size=100, bootstrap=40)


def _gauss(n, dim=8, shift=0.0, scale=1.0, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale + shift


def _unbiased_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    k = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    return float((kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1))
                 - 2 * kxy.mean())


def test_each_resample_scores_what_the_metrics_give_on_the_resampled_set():
    real, fake = _gauss(300, seed=1), _gauss(150, shift=0.2, scale=1.1, seed=2)
    counts = resample_counts(len(fake), 3, seed=7)
    reps = replicates(real, fake, counts)
    for b in range(3):
        drawn = torch.arange(len(fake)).repeat_interleave(counts[b].long())  # the resample, duplicates included
        resample = fake[drawn]
        expected = {"fid": fid_kid(real, resample, kid_subsets=1, kid_subset_size=100)["fid"],
                    "kid_mean": _unbiased_mmd2(resample, real), **precision_recall(real, resample),
                    **density_coverage(real, resample)}
        for name, value in expected.items():
            assert float(reps[name][b]) == pytest.approx(value, rel=1e-7, abs=1e-9), name
    ones = replicates(real, fake, torch.ones(1, len(fake)))  # the sample set itself: the headline values
    headline = all_metrics(real, fake, None, CFG, seed=0)
    for name in ("fid", "precision", "recall", "density", "coverage"):
        assert float(ones[name][0]) == pytest.approx(headline[name], rel=1e-7, abs=1e-9)


def test_basic_interval_is_seeded_and_reflects_the_resampling_bias():
    real, fake = _gauss(600, seed=3), _gauss(300, shift=0.3, seed=4)
    headline = all_metrics(real, fake, None, CFG, seed=CFG.seed)
    state = torch.random.get_rng_state()
    first = bootstrap_intervals(real, fake, headline, CFG)
    assert torch.equal(torch.random.get_rng_state(), state)  # the headline's RNG stream is left alone
    assert first == bootstrap_intervals(real, fake, headline, CFG)  # same seed, same intervals, bit for bit
    assert first != bootstrap_intervals(real, fake, headline, CFG.model_copy(update={"seed": 5}))
    assert first["bootstrap_samples"] == 40 and first["bootstrap_level"] == 0.95
    for name, (lo, hi) in BOUNDS.items():
        assert lo <= first[f"{name}_low"] < first[f"{name}_high"] <= hi, name
    for name in ("precision", "density"):  # unbiased in the sample size: the interval holds the estimate
        assert first[f"{name}_low"] <= headline[name] <= first[f"{name}_high"], name
    # FID's resamples are biased upwards; the basic interval reflects that bias below the estimate.
    reps = replicates(real, fake, resample_counts(len(fake), CFG.bootstrap, CFG.seed))["fid"]
    assert float(reps.median()) > headline["fid"] and first["fid_low"] < headline["fid"]
    assert bootstrap_intervals(real, fake, headline, CFG.model_copy(update={"bootstrap": 0})) == {}


def test_interval_widens_with_fewer_samples_and_a_higher_level():
    real = _gauss(600, seed=5)

    def width(n, level=0.95, name="fid"):
        fake = _gauss(n, shift=0.3, seed=6)
        headline = {k: float(v[0]) for k, v in replicates(real, fake, torch.ones(1, n)).items()}  # no subsets
        out = bootstrap_intervals(real, fake, headline, CFG.model_copy(update={"interval": level}))
        return out[f"{name}_high"] - out[f"{name}_low"]

    assert width(60) > 1.5 * width(480)
    assert width(60, name="precision") > width(480, name="precision")
    assert width(240, level=0.99) > width(240, level=0.5)

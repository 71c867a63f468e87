"""Sample-based metrics in evaluator feature space: FID, KID, precision/recall, density/coverage,
classifier score and modes covered.

FID and KID come from torchmetrics (fed our feature module); the k-NN manifold metrics follow
Kynkaenniemi et al. 2019 (precision/recall, k=3) and Naeem et al. 2020 (density/coverage, k=5) and
are written here because torchmetrics has no implementation of them.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from genops.config.sections import EvaluateConfig


class Identity(nn.Module):
    """Features are the input itself: lets torchmetrics compute FID/KID on precomputed features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid_kid(real: torch.Tensor, fake: torch.Tensor, kid_subsets: int = 50, kid_subset_size: int = 500,
            seed: int = 0) -> dict[str, float]:
    """FID and KID (mean, std over subsets) between two feature sets (N x D)."""
    dim = real.shape[1]
    size = min(kid_subset_size, len(real), len(fake))
    kid = KernelInceptionDistance(feature=Identity(dim), subsets=kid_subsets, subset_size=size, normalize=True)
    kid.update(real.float(), real=True)
    kid.update(fake.float(), real=False)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # KID draws random subsets
    kid_mean, kid_std = kid.compute()
    torch.random.set_rng_state(state)
    return {"fid": fid(real, fake), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


def fid(real: torch.Tensor, other: torch.Tensor) -> float:
    """FID between two feature sets (N x D), in double precision (torchmetrics, fed the features directly)."""
    metric = FrechetInceptionDistance(feature=Identity(real.shape[1]), normalize=True)
    metric.update(real.double(), real=True)
    metric.update(other.double(), real=False)
    return float(metric.compute())


def _kth_nn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row."""
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: the row itself is at distance 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Precision: share of fakes inside the real manifold; recall: share of reals inside the fake one."""
    real, fake = real.double(), fake.double()
    r_real, r_fake = _kth_nn_radius(real, k), _kth_nn_radius(fake, k)
    d = torch.cdist(fake, real)  # fake x real
    precision = (d <= r_real[None, :]).any(dim=1).double().mean()
    recall = (r_fake[None, :] >= d.T).any(dim=1).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Density: how many real k-NN balls hold each fake (1 ~ matches real); coverage: share of real
    balls holding at least one fake (robust to outliers, unlike recall)."""
    real, fake = real.double(), fake.double()
    r_real = _kth_nn_radius(real, k)
    inside = torch.cdist(fake, real) <= r_real[None, :]  # fake x real
    density = inside.double().sum() / (k * len(fake))
    coverage = inside.any(dim=0).double().mean()
    return {"density": float(density), "coverage": float(coverage)}


def classifier_score(probs: torch.Tensor) -> float:
    """The Inception Score formula with the evaluator: exp(E_x KL(p(y|x) || p(y)))."""
    probs = probs.double().clamp_min(1e-12)
    marginal = probs.mean(0, keepdim=True)
    return float(torch.exp((probs * (probs.log() - marginal.log())).sum(1).mean()))


def modes_covered(probs: torch.Tensor, min_share: float) -> dict[str, float]:
    """Classes that receive at least min_share x (1/K) of the samples (argmax of the evaluator)."""
    k = probs.shape[1]
    counts = torch.bincount(probs.argmax(1), minlength=k).double()
    share = counts / counts.sum()
    return {"modes_covered": float((share >= min_share / k).sum()), "modes_total": float(k),
            "largest_mode_share": float(share.max())}


def all_metrics(real_feats: torch.Tensor, fake_feats: torch.Tensor, fake_probs: torch.Tensor | None,
                cfg: EvaluateConfig, seed: int) -> dict[str, float]:
    """Every sample metric of one sample set against the real reference set (`seed` draws the KID subsets)."""
    out = fid_kid(real_feats, fake_feats, cfg.kid_subsets, cfg.kid_subset_size, seed)
    out.update(precision_recall(real_feats, fake_feats, cfg.pr_k))
    out.update(density_coverage(real_feats, fake_feats, cfg.dc_k))
    if fake_probs is not None:
        out["classifier_score"] = classifier_score(fake_probs)
        out.update(modes_covered(fake_probs, cfg.mode_min_share))
    return out

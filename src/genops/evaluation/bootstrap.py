"""Bootstrap intervals of the sample metrics: how much FID, KID, precision/recall and density/coverage move
with the draw of the generated samples.

Only the generated samples' features are resampled (with replacement); the real reference set stays fixed.
The interval is about this model's sample draw: the reference is common to every family and every version
of a family, so its own sampling noise shifts all of them together and cancels when they are compared.

Each resample reuses what does not change between resamples (the reference statistics and k-NN radii, the
fake x real distances and kernel values), so a resample costs a few small matrix products: the multiplicity
of each sample in the resample (a weight vector) is all the metrics need, except recall, whose fake k-NN
radii are recomputed on the resample. KID per resample is the unbiased MMD^2 between the whole resample
and the whole reference (the expectation that the headline's subset average estimates), so it draws no
subsets; the headline's own `kid_std` is the spread over its subsets.

FID, KID, recall and coverage are biased by the sample size, and a resample (about 63 % distinct samples)
is biased once more: plain percentiles of bootstrapped FID lie above the headline value. The interval is
therefore the *basic* bootstrap interval (Davison & Hinkley 1997, eq. 5.6; scipy.stats.bootstrap's
method="basic"): the percentiles reflected about the headline value, (2θ - q_hi, 2θ - q_lo), which carries the
bootstrap's estimate of that bias to the other side. For a strongly biased metric it can lie wholly on one side
of the headline value: that is what it says about where the true value is. scipy.stats.bootstrap itself is not
used because it would recompute every metric per resample; the replicates here reuse the fixed parts.
"""

from __future__ import annotations

import math

import torch

from genops.config.sections import EvaluateConfig

# The metrics with intervals and the range each can take (intervals are clipped to it).
BOUNDS = {"fid": (0.0, math.inf), "kid_mean": (-math.inf, math.inf), "precision": (0.0, 1.0), "recall": (0.0, 1.0),
          "density": (0.0, math.inf), "coverage": (0.0, 1.0)}


def resample_counts(n: int, resamples: int, seed: int) -> torch.Tensor:
    """resamples x n multiplicities: how often each of the n samples is drawn in each resample of size n."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (resamples, n), generator=gen)
    counts = torch.zeros(resamples, n, dtype=torch.float64)
    return counts.scatter_add_(1, idx, torch.ones_like(counts))


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def replicates(real: torch.Tensor, fake: torch.Tensor, counts: torch.Tensor, pr_k: int = 3, dc_k: int = 5
               ) -> dict[str, torch.Tensor]:
    """Every interval metric for each resample (a row of `counts`, see resample_counts): metric -> (resamples,).

    A row of ones is the sample set itself and gives the headline values (up to float rounding; KID: the
    full-set MMD^2 that the headline's subsets estimate)."""
    real, fake, counts = real.double(), fake.double(), counts.double()
    n, dim = fake.shape
    big_n = len(real)
    out: dict[str, torch.Tensor] = {}

    # FID: fixed reference Gaussian; tr sqrt(S_r S_b) = tr sqrt(S_r^1/2 S_b S_r^1/2), a symmetric eigenproblem.
    mu_r = real.mean(0)
    cov_r = torch.cov(real.T)
    root_r = _sqrtm_psd(cov_r)
    mu = counts @ fake / n
    second = (fake.T[None] * counts[:, None, :]) @ fake
    cov = (second - n * mu[:, :, None] * mu[:, None, :]) / (n - 1)
    eig = torch.linalg.eigvalsh(root_r @ cov @ root_r)
    out["fid"] = ((mu - mu_r).square().sum(1) + cov_r.trace() + cov.diagonal(dim1=1, dim2=2).sum(1)
                  - 2 * eig.clamp_min(0).sqrt().sum(1))
    del second, cov

    # KID: cubic polynomial kernel (gamma = 1/dim, coef 1), unbiased MMD^2 between resample and reference.
    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / dim + 1.0) ** 3

    k_rr = kernel(real, real)
    rr = (k_rr.sum() - k_rr.diagonal().sum()) / (big_n * (big_n - 1))
    del k_rr
    k_ff = kernel(fake, fake)
    ff = ((counts @ k_ff) * counts).sum(1) - counts @ k_ff.diagonal()
    del k_ff
    fr = counts @ kernel(fake, real).sum(1)
    out["kid_mean"] = rr + ff / (n * (n - 1)) - 2 * fr / (n * big_n)

    # Precision/density/coverage: the real k-NN balls are fixed, so each sample's share is fixed too.
    d_rr = torch.cdist(real, real)
    r_pr, r_dc = (d_rr.kthvalue(k + 1, dim=1).values for k in (pr_k, dc_k))  # as sample_metrics._kth_nn_radius
    del d_rr
    d_fr = torch.cdist(fake, real)
    out["precision"] = counts @ (d_fr <= r_pr[None, :]).any(1).double() / n
    in_dc = d_fr <= r_dc[None, :]
    out["density"] = counts @ in_dc.sum(1).double() / (dc_k * n)
    out["coverage"] = ((counts > 0).double() @ in_dc.double() > 0).double().mean(1)
    del in_dc

    # Recall: the fake k-NN radii of each resample (its duplicates included, as the metric sees them).
    radii = _resample_radii(torch.cdist(fake, fake), counts, pr_k)
    out["recall"] = _covered(d_fr, radii).double().mean(1)
    return out


def _resample_radii(d_ff: torch.Tensor, counts: torch.Tensor, k: int) -> torch.Tensor:
    """resamples x n: each drawn sample's distance to its k-th nearest other member of the resample (-inf when
    not drawn); the (k+1)-th smallest of its distances counted with their multiplicities, as kthvalue would on
    the resampled set (+1: the row itself)."""
    n = d_ff.shape[0]
    sorted_d, order = d_ff.sort(dim=1)
    cols = min(n, 8 * (k + 1) + 32)  # enough neighbours to reach k+1 draws but for rare rows, redone in full
    cum = counts[:, order[:, :cols]].cumsum(2)  # resamples x n x cols
    pos = (cum < k + 1).sum(2)
    short = pos >= cols
    if short.any():
        for b, i in short.nonzero().tolist():
            pos[b, i] = int((counts[b, order[i]].cumsum(0) < k + 1).sum())
    radii = sorted_d.gather(1, pos.clamp_max(n - 1).T).T
    return radii.masked_fill(counts == 0, -math.inf)


def _covered(d_fr: torch.Tensor, radii: torch.Tensor, max_elements: int = 2**23) -> torch.Tensor:
    """resamples x reals: is the real inside the k-NN ball of some drawn sample (radii from _resample_radii)?

    Only pairs closer than the sample's largest radius over all resamples can ever count, so only those are
    checked (in chunks of resamples, to bound memory)."""
    fake_i, real_j = (d_fr <= radii.max(0).values[:, None]).nonzero(as_tuple=True)
    dist = d_fr[fake_i, real_j]
    out = torch.zeros(radii.shape[0], d_fr.shape[1], dtype=torch.bool)
    step = max(1, max_elements // max(1, len(dist)))
    for b in range(0, radii.shape[0], step):
        hit = (radii[b : b + step, fake_i] >= dist[None, :]).double()
        out[b : b + step] = torch.zeros(hit.shape[0], d_fr.shape[1], dtype=torch.float64).index_add_(1, real_j, hit) > 0
    return out


def basic_interval(values: torch.Tensor, headline: float, level: float) -> tuple[float, float]:
    """The basic bootstrap interval at `level`: (2 headline - q_(1+level)/2, 2 headline - q_(1-level)/2)."""
    qs = torch.quantile(values.double(), torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    q_low, q_high = (float(q) for q in qs)
    return 2 * headline - q_high, 2 * headline - q_low


def bootstrap_intervals(real: torch.Tensor, fake: torch.Tensor, headline: dict[str, float],
                        cfg: EvaluateConfig) -> dict[str, float]:
    """`metric_low` / `metric_high` for each metric of BOUNDS, plus `bootstrap_samples` and `bootstrap_level`.

    `evaluate.bootstrap` resamples drawn with a generator seeded by `evaluate.seed` (the same intervals for the
    same features on CPU; no global RNG state is touched); `evaluate.interval` is the level. Empty when
    `evaluate.bootstrap` is 0."""
    if cfg.bootstrap <= 0:
        return {}
    counts = resample_counts(len(fake), cfg.bootstrap, cfg.seed)
    out: dict[str, float] = {}
    for name, values in replicates(real, fake, counts, cfg.pr_k, cfg.dc_k).items():
        low, high = basic_interval(values, headline[name], cfg.interval)
        lo_bound, hi_bound = BOUNDS[name]
        out[f"{name}_low"] = min(max(low, lo_bound), hi_bound)
        out[f"{name}_high"] = max(min(high, hi_bound), lo_bound)
    out["bootstrap_samples"] = float(cfg.bootstrap)
    out["bootstrap_level"] = cfg.interval
    return out

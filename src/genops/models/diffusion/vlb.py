"""The variational bound of a diffusion model: timestep strata and the discretised-Gaussian decoder L_0."""

from __future__ import annotations

import math

import torch
from torch import nn

from genops.models.diffusion.schedules import NoiseSchedule, expand, x0_and_eps


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per value for x in {-1, -1 + 2/255, ..., 1} under N(mean, exp(log_scale)^2) binned to 256 values
    (Ho et al.'s L_0): bins are 2/255 wide and the edge bins absorb the tails, so the masses sum to one."""
    half = 1.0 / 255.0
    inv_s = torch.exp(-log_scale)
    plus, minus = inv_s * (x - mean + half), inv_s * (x - mean - half)
    log_cdf_plus = torch.special.log_ndtr(plus)  # the x = -1 bin: (-inf, -1 + 1/255]
    log_one_minus_cdf_minus = torch.special.log_ndtr(-minus)  # the x = 1 bin: [1 - 1/255, inf)
    # Far in a tail both CDFs round to the same value: take the mass from the side where it is resolvable.
    delta = torch.where(minus > 0, torch.special.ndtr(-minus) - torch.special.ndtr(-plus),
                        torch.special.ndtr(plus) - torch.special.ndtr(minus))
    mid = inv_s * (x - mean)
    log_pdf_mid = -0.5 * mid**2 - 0.5 * math.log(2 * math.pi) - log_scale + math.log(2 * half)
    log_mid = torch.where(delta > 1e-12, torch.log(delta.clamp(min=1e-30)), log_pdf_mid)
    return torch.where(x < -1 + half, log_cdf_plus, torch.where(x > 1 - half, log_one_minus_cdf_minus, log_mid))


def vlb_strata(T: int, K: int) -> list[int]:
    """Edges of K contiguous strata covering t = 1 .. T-1, geometrically wider with t: L_t is large and changes
    fast at small t (each of the first few t gets its own stratum) and is small and smooth later, so one draw
    per stratum, weighted by its width, is an unbiased and low-variance estimate of sum_t L_t."""
    K = max(1, min(K, T - 1))
    geo = torch.logspace(0, math.log10(T), K + 1, dtype=torch.float64).tolist()
    edges = [1]
    for i in range(1, K):
        edges.append(min(max(round(geo[i]), edges[-1] + 1), T - (K - i)))
    return [*edges, T]


def vlb_terms(net: nn.Module, x0: torch.Tensor, y: torch.Tensor | None, K: int, generator: torch.Generator,
              sched: NoiseSchedule, prediction: str, clip: bool) -> tuple[torch.Tensor, ...]:
    """Per image, in nats: L_T (prior), L_0 (discrete decoder), an unbiased stratified estimate of
    sum_{t=1}^{T-1} L_t (one random t per stratum, weighted by stratum size), and the L_simple loss."""
    n, dev, T = x0.shape[0], x0.device, sched.T

    def model_x0(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, raw network output) at x_t."""
        out = net(x_t, t.to(dev, torch.float32), y).float()
        return x0_and_eps(out, x_t, expand(sched.at(sched.alpha_bar, t), x_t), prediction, clip)[0], out

    # L_T = KL(q(x_T | x_0) || N(0, I)): fixed by the schedule, no network.
    ab_T = float(sched.alpha_bar[-1])
    prior = 0.5 * (ab_T * x0**2 + (1 - ab_T) - 1 - math.log(1 - ab_T))
    # L_0 = -log p(x_0 | x_1), a discretised Gaussian around the model's posterior mean.
    t0 = torch.zeros(n, dtype=torch.long)
    x_1 = sched.q_sample(x0, t0, torch.randn(x0.shape, generator=generator).to(dev))
    mean0, _ = sched.q_posterior(model_x0(x_1, t0)[0], x_1, t0)
    log_scale0 = 0.5 * math.log(float(sched.posterior_var_clipped[0]))
    l0 = -discretized_gaussian_log_prob(x0, mean0, torch.full_like(mean0, log_scale0))
    # L_t = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) = ||mu~ - mu_theta||^2 / (2 beta~_t): equal variances.
    bounds = vlb_strata(T, K)
    middle, simple = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        t = torch.randint(lo, hi, (n,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator).to(dev)
        x_t = sched.q_sample(x0, t, eps)
        x0_hat, out = model_x0(x_t, t)
        mu, var = sched.q_posterior(x0, x_t, t)
        mu_theta, _ = sched.q_posterior(x0_hat, x_t, t)
        middle += (hi - lo) * ((mu - mu_theta) ** 2 / (2 * var)).flatten(1).sum(1)
        target = eps if prediction == "eps" else sched.v_target(x0, t, eps)
        simple += (hi - lo) / (T - 1) * (out - target).pow(2).flatten(1).mean(1)
    return prior.flatten(1).sum(1), l0.flatten(1).sum(1), middle, simple

"""Log-likelihoods over 8-bit pixels, so every family's NLL is in the same units (nats, bits/dim)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genops.models.sharding import BatchNoise

BINS = 255.0  # pixel values k / 255, k = 0..255


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per pixel for x in {0, 1/255, ..., 1} under a logistic(mean, scale) binned to 256 values.

    The edge bins absorb the tails (x = 0 takes (-inf, 0.5/255], x = 1 takes [1 - 0.5/255, inf)), so the
    256 probabilities sum to one and the NLL is a true discrete likelihood, comparable with PixelCNN's.
    """
    log_scale = log_scale.clamp(min=-7.0)
    inv_s = torch.exp(-log_scale)
    centered = x - mean
    plus = inv_s * (centered + 0.5 / BINS)
    minus = inv_s * (centered - 0.5 / BINS)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus): the x == 0 bin
    log_one_minus_cdf_minus = -F.softplus(minus)  # log (1 - sigmoid(minus)): the x == 1 bin
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * centered
    # When the bin mass underflows, use the density at the bin centre times the bin width.
    log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid) - math.log(BINS)
    log_mid = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
    return torch.where(x < 0.5 / BINS, log_cdf_plus, torch.where(x > 1 - 0.5 / BINS, log_one_minus_cdf_minus, log_mid))


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per latent dimension (rows x dims): what free bits and active-unit
    diagnostics look at."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in closed form, summed over latent dims: one value per row."""
    return gaussian_kl_per_dim(mu, logvar).sum(dim=1)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over dims."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()).sum(dim=1)


def nats_to_bits_per_dim(nats: float, dims: int) -> float:
    return nats / (dims * math.log(2.0))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | BatchNoise | None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) eps with eps ~ N(0, I) from `generator` (a training step's BatchNoise): a sample
    of q(z | x) that gradients flow through (Kingma & Welling 2014)."""
    if isinstance(generator, BatchNoise):
        eps = generator.randn(*mu.shape)
    else:
        eps = torch.randn(mu.shape, generator=generator, device=generator.device if generator else None)
    return mu + torch.exp(0.5 * logvar) * eps.to(mu.device)

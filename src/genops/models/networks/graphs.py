"""Graph wrappers: the exact modules exported to ONNX and called by the samplers."""

from __future__ import annotations

import torch
from torch import nn


class LatentGaussianSampler(nn.Module):
    """The exported sampler graph: noise eps ~ N(0, I) [, label] -> to_image(m + L eps [, label]).

    `to_image` maps a latent to pixels (the autoencoder's decoder + sigmoid, the VAE's decoder mean), so one
    graph serves every family whose prior is a Gaussian N(m, L L^T) held as buffers."""

    def __init__(self, to_image: nn.Module, mean: torch.Tensor, chol: torch.Tensor) -> None:
        super().__init__()
        self.to_image = to_image
        self.mean, self.chol = mean, chol

    def forward(self, noise: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        z = self.mean + noise @ self.chol.T
        return self.to_image(z) if label is None else self.to_image(z, label)


class NoiseToImage(nn.Module):
    """The sampler graph of a one-pass generator (VAE decoder, GAN generator): noise [, label] -> image.

    `first_output` keeps the first element of a decoder that returns a tuple (the VAE's mean, log-scale)."""

    def __init__(self, decoder: nn.Module, first_output: bool = False) -> None:
        super().__init__()
        self.decoder, self.first_output = decoder, first_output

    def forward(self, noise: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        out = self.decoder(noise, label)
        return out[0] if self.first_output else out


class MeanEncoder(nn.Module):
    """The exported encoder graph: image [, label] -> (mu, logvar)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor, label: torch.Tensor | None = None):
        return self.encoder(image, label)


class LatentStats(nn.Module):
    """Per-dimension mean and standard deviation of the training latents (buffers: saved with the weights)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))


class LatentDecoder(nn.Module):
    """The exported decoder graph: standardised latent -> image (the VAE decoder's mean)."""

    def __init__(self, stats: LatentStats, decoder: nn.Module) -> None:
        super().__init__()
        self.stats, self.decoder = stats, decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent * self.stats.std + self.stats.mean)[0].clamp(0, 1)

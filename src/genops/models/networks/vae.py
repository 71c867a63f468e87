"""The VAE's Gaussian encoder and discretised-logistic decoder."""

from __future__ import annotations

import torch
from torch import nn

from genops.data.spec import DataSpec
from genops.models.networks.conv import ConvDecoder, ConvEncoder


class Encoder(nn.Module):
    """x [, y] -> (mu, logvar)."""

    def __init__(self, spec: DataSpec, widths: list[int], latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.net = ConvEncoder(spec, widths, 2 * latent_dim, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(x, y).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)


class Decoder(nn.Module):
    """z [, y] -> (mean in [0, 1], log-scale) per pixel."""

    def __init__(self, spec: DataSpec, widths: list[int], latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.channels = spec.channels
        self.net = ConvDecoder(spec, widths, latent_dim, 2 * spec.channels, num_classes)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(z, y)
        return torch.sigmoid(out[:, : self.channels]), out[:, self.channels :]



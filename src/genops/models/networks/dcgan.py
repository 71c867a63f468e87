"""DCGAN generator and discriminator (Radford et al. 2016), sized for any image shape; conditional variants."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from genops.data.spec import DataSpec
from genops.models.networks.conv import level_sizes


class Generator(nn.Module):
    """z [, y] -> image in [0, 1] (tanh in [-1, 1], rescaled so every family emits the same range)."""

    def __init__(self, spec: DataSpec, widths: list[int], latent_dim: int, num_classes: int) -> None:
        super().__init__()
        sizes = level_sizes(spec.height, spec.width, len(widths))
        levels = len(sizes) - 1
        chans = widths[:levels] or widths[:1]  # shallow -> deep, as in the discriminator
        self.start, self.c0 = sizes[-1], chans[-1]
        self.label_emb = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_dim = latent_dim * (2 if num_classes else 1)
        self.project = nn.Linear(in_dim, self.c0 * sizes[-1][0] * sizes[-1][1], bias=False)
        self.project_norm = nn.Sequential(nn.BatchNorm2d(self.c0), nn.ReLU())
        layers: list[nn.Module] = []
        c_in = self.c0
        for level in range(levels, 0, -1):
            (h_in, w_in), (h, w) = sizes[level], sizes[level - 1]
            c_out = chans[level - 2] if level >= 2 else max(chans[0] // 2, 8)
            # kernel 3, stride 2, padding 1 gives 2n-1; output_padding adds the 1 back where the size was even
            layers += [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, bias=False,
                                          output_padding=(h - (2 * h_in - 1), w - (2 * w_in - 1))),
                       nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        layers += [nn.Conv2d(c_in, spec.channels, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_emb is not None:
            z = torch.cat([z, self.label_emb(y)], dim=1)
        h = self.project_norm(self.project(z).view(-1, self.c0, *self.start))
        return (self.body(h) + 1) / 2


class Discriminator(nn.Module):
    """image [, y] -> one unnormalised score (a logit, or a WGAN critic value)."""

    def __init__(self, spec: DataSpec, widths: list[int], num_classes: int, norm: str, sn: bool) -> None:
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        sizes = level_sizes(spec.height, spec.width, len(widths))
        chans = widths[: len(sizes) - 1] or widths[:1]
        layers: list[nn.Module] = []
        c_in = spec.channels
        for i, c_out in enumerate(chans):
            layers.append(wrap(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)))
            if i > 0 and norm == "batch":  # DCGAN: no norm on D's first layer
                layers.append(nn.BatchNorm2d(c_out))
            elif i > 0 and norm == "layer":
                layers.append(nn.GroupNorm(1, c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.Flatten())
        h, w = sizes[len(chans)] if len(sizes) > len(chans) else sizes[-1]
        features = c_in * h * w
        self.out = wrap(nn.Linear(features, 1))
        self.label_emb = wrap(nn.Embedding(num_classes, features)) if num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(x * 2 - 1)
        score = self.out(h).squeeze(1)
        if self.label_emb is not None:
            score = score + (self.label_emb(y) * h).sum(1)  # projection discriminator
        return score

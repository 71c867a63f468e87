"""Convolutional encoder/decoder stacks that fit any image size and channel count.

Down-sampling is stride-2 convolution (sizes round up); up-sampling resizes to the exact size the
encoder saw at that level, so odd sizes such as 28 -> 14 -> 7 or 8 x 12 images round-trip exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genops.data.spec import DataSpec


def level_sizes(height: int, width: int, n_levels: int, min_size: int = 3) -> list[tuple[int, int]]:
    """Spatial sizes after 0..k stride-2 convs, stopping before the smaller side drops under min_size."""
    sizes = [(height, width)]
    for _ in range(n_levels):
        h, w = math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)
        if min(h, w) < min_size:
            break
        sizes.append((h, w))
    return sizes


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (one group per channel for narrow layers)."""
    return nn.GroupNorm(min(8, channels), channels)


class ConvEncoder(nn.Module):
    """x -> feature vector of size `out_features` (plus an optional label embedding)."""

    def __init__(self, spec: DataSpec, widths: list[int], out_features: int, num_classes: int = 0) -> None:
        super().__init__()
        self.sizes = level_sizes(spec.height, spec.width, len(widths))
        widths = widths[: len(self.sizes) - 1] or widths[:1]
        layers: list[nn.Module] = [nn.Conv2d(spec.channels, widths[0], 3, padding=1), nn.SiLU()]
        c_in = widths[0]
        for c_out in widths[: len(self.sizes) - 1]:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), group_norm(c_out), nn.SiLU()]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        h, w = self.sizes[-1]
        self.label_emb = nn.Embedding(num_classes, 32) if num_classes else None
        self.head = nn.Linear(c_in * h * w + (32 if num_classes else 0), out_features)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x).flatten(1)
        if self.label_emb is not None:
            h = torch.cat([h, self.label_emb(y)], dim=1)
        return self.head(h)


class ConvDecoder(nn.Module):
    """latent (plus optional label embedding) -> C_out x H x W map (unnormalised)."""

    def __init__(self, spec: DataSpec, widths: list[int], latent_dim: int, out_channels: int,
                 num_classes: int = 0) -> None:
        super().__init__()
        sizes = level_sizes(spec.height, spec.width, len(widths))
        widths = widths[: len(sizes) - 1] or widths[:1]
        self.start_size = sizes[-1]
        self.start_channels = widths[-1] if len(sizes) > 1 else widths[0]
        self.label_emb = nn.Embedding(num_classes, 32) if num_classes else None
        self.project = nn.Linear(latent_dim + (32 if num_classes else 0),
                                 self.start_channels * sizes[-1][0] * sizes[-1][1])
        layers: list[nn.Module] = [nn.SiLU()]
        c_in = self.start_channels
        # Walk back up: level i restores sizes[i-1] with widths[i-2] channels (widths[0] at the top).
        for level in range(len(sizes) - 1, 0, -1):
            c_out = widths[level - 2] if level >= 2 else widths[0]
            layers += [nn.Upsample(size=sizes[level - 1], mode="nearest"),
                       nn.Conv2d(c_in, c_out, 3, padding=1), group_norm(c_out), nn.SiLU()]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_emb is not None:
            z = torch.cat([z, self.label_emb(y)], dim=1)
        h = self.project(z).view(-1, self.start_channels, *self.start_size)
        return self.body(h)

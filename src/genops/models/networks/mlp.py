"""Residual MLP denoiser for flat latents: what the U-Net is for images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genops.models.networks.unet import SinusoidalEmbedding, conditioning


class MLPBlock(nn.Module):
    """LayerNorm-SiLU-Linear twice, the embedding as scale and shift in between, and a residual."""

    def __init__(self, width: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1, self.fc1 = nn.LayerNorm(width), nn.Linear(width, width)
        self.emb = nn.Linear(emb_dim, 2 * width)
        self.norm2, self.fc2 = nn.LayerNorm(width), nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)  # each block starts as the identity
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.fc1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)
        return x + self.fc2(F.silu(self.norm2(h) * (1 + scale) + shift))


class MLPDenoiser(nn.Module):
    """(z_t, t[, label]) -> eps or v for flat latents: what the U-Net is for images."""

    def __init__(self, dim: int, width: int, blocks: int, num_classes: int) -> None:
        super().__init__()
        emb_dim = width
        self.time_embed = nn.Sequential(SinusoidalEmbedding(width), nn.Linear(width, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None  # + the null label
        self.num_classes = num_classes
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(MLPBlock(width, emb_dim) for _ in range(blocks))
        self.norm_out, self.out = nn.LayerNorm(width), nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        emb = conditioning(self, t, label, x_t)
        h = self.inp(x_t)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.norm_out(h)))

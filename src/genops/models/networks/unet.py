"""Denoising networks over (x_t, t[, label]): the U-Net for images and its embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genops.data.spec import DataSpec
from genops.models.networks.conv import level_sizes


def _groups(channels: int) -> int:
    """GroupNorm groups of at least 4 channels (at most 32 groups): with one channel per group the norm would
    be an instance norm, which removes any per-channel offset and with it a conditioning signal."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= min(4, channels))


class SinusoidalEmbedding(nn.Module):
    """t -> [sin(t w_i), cos(t w_i)], w_i = 10000^(-i / half): the Transformer position code for timesteps."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)  # a constant, not a weight

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float()[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with the time(+label) embedding in between, and a residual connection.

    The embedding enters as a scale and shift of the second GroupNorm's output, norm(h) (1 + scale) + shift
    (Nichol & Dhariwal 2021), rather than Ho et al.'s addition before it: a per-channel offset added before a
    GroupNorm is largely subtracted again by it in the narrow networks used here.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions of a feature map (used where maps are small)."""

    def __init__(self, channels: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim) if channels % head_dim == 0 else 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        d = c // self.heads
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, d, h * w).unbind(1)
        # Plain softmax(q^T k / sqrt(d)) v: on CPU it is faster than SDPA's masked fallback and exports simply.
        weights = torch.softmax(q.transpose(-1, -2) @ k * d**-0.5, dim=-1)  # N x heads x HW x HW
        a = v @ weights.transpose(-1, -2)  # N x heads x d x HW
        return x + self.out(a.reshape(n, c, h, w))


class Level(nn.Module):
    """The residual blocks (each optionally followed by attention) of one resolution."""

    def __init__(self, blocks: list[ResBlock], attention: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attn = nn.ModuleList([SelfAttention(b.conv2.out_channels) if attention else nn.Identity()
                                   for b in blocks])


def conditioning(net: nn.Module, t: torch.Tensor, label: torch.Tensor | None, x_t: torch.Tensor) -> torch.Tensor:
    """A denoiser's time embedding plus its label embedding (the null label when none is given, so an
    unlabeled call is the unconditional prediction). `net` has time_embed, label_embed and num_classes."""
    emb = net.time_embed(t)
    if net.label_embed is not None:
        if label is None:
            label = torch.full((x_t.shape[0],), net.num_classes, dtype=torch.long, device=x_t.device)
        emb = emb + net.label_embed(label)
    return emb


class UNet(nn.Module):
    """(x_t, t[, label]) -> eps or v prediction, same shape as x_t. t is a float or int tensor of shape [N].

    Ho et al.'s layout, sized for small images of any shape: per level `blocks` residual blocks (skip
    saved after each) and a stride-2 conv down; a middle of res-attention-res; the way up concatenates
    the saved skips and resizes to the exact saved size (28 -> 14 -> 7 -> 14 -> 28, 20 x 36 -> 10 x 18).
    """

    def __init__(self, spec: DataSpec, widths: list[int], blocks: int, attention_levels: list[int],
                 num_classes: int, dropout: float) -> None:
        super().__init__()
        sizes = level_sizes(spec.height, spec.width, len(widths) - 1)
        widths = widths[: len(sizes)]
        n_levels = len(widths)
        attn = {lvl % n_levels for lvl in attention_levels}  # negative indices count from the lowest resolution
        emb_dim = 4 * widths[0]
        self.time_embed = nn.Sequential(SinusoidalEmbedding(widths[0]), nn.Linear(widths[0], emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        # num_classes + 1 rows: the last is the learned "null" label of classifier-free guidance.
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.num_classes = num_classes
        self.conv_in = nn.Conv2d(spec.channels, widths[0], 3, padding=1)

        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = [widths[0]], widths[0]
        for i, w in enumerate(widths):
            res = []
            for _ in range(blocks):
                res.append(ResBlock(c, w, emb_dim, dropout))
                c = w
                skips.append(c)
            self.down.append(Level(res, i in attn))
            if i < n_levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1, self.mid_attn = ResBlock(c, c, emb_dim, dropout), SelfAttention(c)
        self.mid2 = ResBlock(c, c, emb_dim, dropout)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(n_levels)):
            res = []
            for _ in range(blocks + 1):
                res.append(ResBlock(c + skips.pop(), widths[i], emb_dim, dropout))
                c = widths[i]
            self.up.append(Level(res, i in attn))
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, spec.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # predict zero at first: L_simple starts at E||eps||^2 = 1
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        emb = conditioning(self, t, label, x_t)
        h = self.conv_in(x_t)
        skips = [h]
        for i, level in enumerate(self.down):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(h, emb))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))

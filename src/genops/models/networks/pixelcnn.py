"""Masked convolutions and the Gated PixelCNN (van den Oord et al. 2016) over pixels or code grids."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genops.errors import GenopsError

LEVELS = 256  # 8-bit sub-pixel values


def channel_groups(n: int, groups: int) -> torch.Tensor:
    """Group (sub-pixel) index of each of n channels split into contiguous blocks: 0..0, 1..1, ..."""
    return torch.arange(n) * groups // n


def center_mask(out_groups: torch.Tensor, in_groups: torch.Tensor, include_self: bool) -> torch.Tensor:
    """out x in 0/1 mask for the tap at the current position: group c sees groups < c (A) or <= c (B)."""
    seen = out_groups[:, None] > in_groups[None, :]
    if include_self:
        seen = seen | (out_groups[:, None] == in_groups[None, :])
    return seen.float()


class MaskedConv2d(nn.Conv2d):
    """Convolution with a fixed 0/1 weight mask applied on every call and explicit (asymmetric) padding.

    Masking in forward (rather than once at init) keeps masked weights out of the output whatever the
    optimiser does to them. The mask is a non-persistent buffer: it follows from the config, so
    checkpoints hold only weights.
    """

    def __init__(self, in_channels: int, out_channels: int, mask: torch.Tensor,
                 pad: tuple[int, int, int, int], dilation: int = 1) -> None:
        super().__init__(in_channels, out_channels, tuple(mask.shape[2:]), dilation=dilation)
        self.register_buffer("mask", mask, persistent=False)
        self.pad = pad  # (left, right, top, bottom) as in F.pad
        with torch.no_grad():
            self.weight.mul_(mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias, dilation=self.dilation)


def _gate(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer: a vertical and a horizontal stack, the vertical feeding the horizontal.

    Vertical: kernel (k//2 + 1) x k over rows i - k//2 .. i; mask A drops row i, so the first layer
    sees only rows above and no later layer can bring row i back. Horizontal: kernel 1 x (k//2 + 1)
    over columns j - k//2 .. j, the current column masked per channel group.

    With dilation d the same taps are d apart (rows i - d k//2 .. i, columns j - d k//2 .. j + d k//2):
    still only rows <= i and columns <= j in the current row, so causality is kept, while the receptive
    field grows by d k//2 rows per layer at the cost of an undilated layer (WaveNet, van den Oord et al. 2016).
    """

    def __init__(self, c_in: int, hidden: int, groups: int, kernel: int, first: bool, num_classes: int,
                 dilation: int = 1) -> None:
        super().__init__()
        half = kernel // 2
        reach = half * dilation
        in_g, h_g = channel_groups(c_in, groups), channel_groups(hidden, groups)
        gate_g = torch.cat([h_g, h_g])  # gate halves (a, b) keep the groups of the channels they multiply
        v_mask = torch.ones(2 * hidden, c_in, half + 1, kernel)
        if first:
            v_mask[:, :, -1] = 0.0
        self.v_conv = MaskedConv2d(c_in, 2 * hidden, v_mask, (reach, reach, reach, 0), dilation)
        h_mask = torch.ones(2 * hidden, c_in, 1, half + 1)
        h_mask[:, :, 0, -1] = center_mask(gate_g, in_g, include_self=not first)
        self.h_conv = MaskedConv2d(c_in, 2 * hidden, h_mask, (reach, 0, 0, 0), dilation)
        self.v_to_h = nn.Conv2d(2 * hidden, 2 * hidden, 1)  # vertical features only know rows above: no mask
        self.h_out = MaskedConv2d(hidden, hidden, center_mask(h_g, h_g, True)[:, :, None, None], (0, 0, 0, 0))
        self.residual = not first  # the first layer's input holds the current pixel: no skip around the mask
        self.v_label = nn.Embedding(num_classes, 2 * hidden) if num_classes else None
        self.h_label = nn.Embedding(num_classes, 2 * hidden) if num_classes else None

    def forward(self, v: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        v_pre = self.v_conv(v)
        h_pre = self.h_conv(h) + self.v_to_h(v_pre)
        if self.v_label is not None and y is not None:
            v_pre = v_pre + self.v_label(y)[:, :, None, None]
            h_pre = h_pre + self.h_label(y)[:, :, None, None]
        h_new = self.h_out(_gate(h_pre))
        return _gate(v_pre), (h + h_new) if self.residual else h_new


class GatedPixelCNN(nn.Module):
    """(N, C, H, W) inputs [, labels] -> logits (N, n_values, C, H, W): one categorical per sub-pixel.

    `in_channels` is the number of ordered variables per position (1 grey, 3 RGB, 1 code grid).
    With `embed_dim` = 0 the input is floats in [0, 1] (pixel values k / 255); with `embed_dim` > 0 it
    is integer indices in [0, n_values), each embedded (the VQ-VAE prior over code indices).
    `hidden` is rounded up to a multiple of `in_channels` so every channel group has the same size.
    """

    def __init__(self, in_channels: int, n_values: int = LEVELS, hidden: int = 32, layers: int = 6,
                 kernel: int = 5, num_classes: int = 0, embed_dim: int = 0,
                 dilations: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        if kernel < 3 or kernel % 2 == 0:
            raise GenopsError(f"pixelcnn kernel={kernel}: expected an odd size >= 3")
        if layers < 1:
            raise GenopsError(f"pixelcnn layers={layers}: expected at least 1")
        self.in_channels, self.n_values = in_channels, n_values
        hidden = math.ceil(hidden / in_channels) * in_channels
        self.embed = nn.Embedding(n_values, embed_dim) if embed_dim else None
        c_in = in_channels * embed_dim if embed_dim else in_channels
        if any(d < 1 for d in dilations) or not dilations:
            raise GenopsError(f"pixelcnn dilations={list(dilations)}: expected positive integers")
        # Layer i > 0 takes dilations[(i - 1) % len]; the first (mask A) layer is never dilated, so the pixels
        # right next to the current one are always seen.
        self.layers = nn.ModuleList(
            GatedLayer(c_in if i == 0 else hidden, hidden, in_channels, kernel, i == 0, num_classes,
                       1 if i == 0 else dilations[(i - 1) % len(dilations)])
            for i in range(layers))
        h_g = channel_groups(hidden, in_channels)
        out_g = channel_groups(in_channels * n_values, in_channels)  # logits of sub-pixel c form block c
        self.head = nn.Sequential(
            nn.ReLU(), MaskedConv2d(hidden, hidden, center_mask(h_g, h_g, True)[:, :, None, None], (0, 0, 0, 0)),
            nn.ReLU(), MaskedConv2d(hidden, in_channels * n_values, center_mask(out_g, h_g, True)[:, :, None, None],
                                    (0, 0, 0, 0)))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            e = self.embed(x)  # N, C, H, W, D -> N, C * D, H, W with sub-pixel c in block c
            h = e.permute(0, 1, 4, 2, 3).flatten(1, 2)
        else:
            h = x * 2 - 1
        v = h
        for layer in self.layers:
            v, h = layer(v, h, y)
        return self.head(h).unflatten(1, (self.in_channels, self.n_values)).transpose(1, 2)

"""StyleGAN2's generator (Karras et al. 2020), sized for any image shape: mapping network, styled synthesis.

    z --mapping MLP--> w --(one affine per layer)--> style s_l
    const input --[modulated conv(s_l) + per-layer noise + bias, LeakyReLU]--> ... --> toRGB skips, summed

A modulated convolution scales the input channels by the style and divides each output channel by the norm its
weights then have (demodulation, replacing AdaIN's instance norm without its droplet artefacts). We scale the
activations instead of the weights ("non-fused" modulation in the paper's code): the same result, but one shared
convolution weight, so the graph exports to ONNX with a dynamic batch (grouped convolutions with groups = batch
do not). Layers use the equalised learning rate (weights stored at unit variance, scaled at run time), and the
mapping network learns `lr_mul` times slower.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genops.data.spec import DataSpec
from genops.models.networks.conv import level_sizes

LRELU_GAIN = math.sqrt(2.0)  # keeps activations at unit variance through LeakyReLU(0.2) with equalised weights


class EqualLinear(nn.Module):
    """A linear layer with the equalised learning rate (weights N(0, 1/lr_mul), scaled by lr_mul/sqrt(fan_in))."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init) / lr_mul))
        self.scale, self.lr_mul, self.activation = lr_mul / math.sqrt(in_dim), lr_mul, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return F.leaky_relu(out, 0.2) * LRELU_GAIN if self.activation else out


class MappingNetwork(nn.Module):
    """z -> w through a normalised input and an MLP; tracks the mean w, the centre of truncation."""

    def __init__(self, latent_dim: int, w_dim: int, layers: int, lr_mul: float) -> None:
        super().__init__()
        dims = [latent_dim] + [w_dim] * layers
        self.net = nn.Sequential(*[EqualLinear(a, b, lr_mul=lr_mul, activation=True) for a, b in zip(dims, dims[1:])])
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # pixel norm: only z's direction matters
        return self.net(z)

    def truncate(self, w: torch.Tensor, psi: torch.Tensor | float) -> torch.Tensor:
        """w_avg + psi (w - w_avg): psi < 1 trades diversity for typical, cleaner samples."""
        return self.w_avg + psi * (w - self.w_avg)


class ModulatedConv(nn.Module):
    """A 3x3 (or 1x1) convolution whose input channels are scaled by a per-sample style, demodulated."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, kernel: int = 3, demodulate: bool = True) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)  # style starts at 1: the plain convolution
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale, self.padding, self.demodulate = 1 / math.sqrt(c_in * kernel * kernel), kernel // 2, demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.affine(w)  # N x c_in
        weight = self.weight * self.scale
        out = F.conv2d(x * style[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:  # 1 / ||w'_o|| with w'_oik = w_oik s_i: sum_i s_i^2 sum_k w_oik^2
            demod = torch.rsqrt(style.pow(2) @ weight.pow(2).sum(dim=(2, 3)).t() + 1e-8)  # N x c_out
            out = out * demod[:, :, None, None]
        return out


class StyledLayer(nn.Module):
    """Modulated conv + scaled per-pixel noise + bias + LeakyReLU: one style input, one noise map."""

    def __init__(self, c_in: int, c_out: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv(c_in, c_out, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(()))  # learned; starts without stochastic detail

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        out = self.conv(x, w)
        if noise is not None:
            out = out + self.noise_strength * noise
        return F.leaky_relu(out + self.conv.bias[None, :, None, None], 0.2) * LRELU_GAIN


class ToImage(nn.Module):
    """1x1 modulated conv without demodulation: a level's contribution to the output image."""

    def __init__(self, c_in: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv(c_in, channels, w_dim, kernel=1, demodulate=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.conv.bias[None, :, None, None]


class SynthesisNetwork(nn.Module):
    """Per-layer styles ws (N x num_ws x w_dim) and flattened noise (N x noise_size) -> image in [0, 1].

    Coarse-to-fine: a learned constant at the lowest resolution, one styled layer there, then per level an upsample
    (bilinear, to the exact size: 4 -> 7 -> 14 -> 28) and two styled layers. Every level adds its toRGB output to
    the upsampled image so far (StyleGAN2's skip generator). Style index l drives layer l; each toRGB takes the
    style after its level's last layer (shared with the next level's first), so `num_ws` = styled layers + 1."""

    def __init__(self, spec: DataSpec, widths: list[int], w_dim: int, noise: bool = True) -> None:
        super().__init__()
        self.sizes = level_sizes(spec.height, spec.width, len(widths))
        chans = widths[: len(self.sizes) - 1] or widths[:1]
        chans = chans + [chans[-1]] * (len(self.sizes) - len(chans))  # one width per resolution, shallow -> deep
        self.use_noise = noise
        c0 = chans[-1]
        self.const = nn.Parameter(torch.randn(1, c0, *self.sizes[-1]))
        self.layers = nn.ModuleList([StyledLayer(c0, c0, w_dim)])
        self.layer_sizes = [self.sizes[-1]]
        self.to_image = nn.ModuleList([ToImage(c0, spec.channels, w_dim)])
        self.image_style = [1]  # toRGB takes the style after its level's last layer (StyleGAN2's indexing)
        for level in range(len(self.sizes) - 2, -1, -1):
            c_in, c_out = chans[level + 1], chans[level]
            self.layers.extend([StyledLayer(c_in, c_out, w_dim), StyledLayer(c_out, c_out, w_dim)])
            self.layer_sizes += [self.sizes[level]] * 2
            self.to_image.append(ToImage(c_out, spec.channels, w_dim))
            self.image_style.append(len(self.layers))
        self.num_ws = len(self.layers) + 1  # the final toRGB's style is the only one no layer shares
        # Always this long (ignored with noise off), so the exported graph's inputs never have a zero-sized axis.
        self.noise_size = sum(h * w for h, w in self.layer_sizes)

    def split_noise(self, noise: torch.Tensor) -> list[torch.Tensor | None]:
        """The flattened noise input as one N x 1 x h x w map per styled layer."""
        if not self.use_noise:
            return [None] * len(self.layers)
        maps, start = [], 0
        for h, w in self.layer_sizes:
            maps.append(noise[:, start: start + h * w].reshape(-1, 1, h, w))
            start += h * w
        return maps

    def forward(self, ws: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        maps = self.split_noise(noise)
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        x = self.layers[0](x, ws[:, 0], maps[0])
        image = self.to_image[0](x, ws[:, self.image_style[0]])
        for level in range(1, len(self.to_image)):
            size = self.layer_sizes[2 * level - 1]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            for i in (2 * level - 1, 2 * level):
                x = self.layers[i](x, ws[:, i], maps[i])
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
            image = image + self.to_image[level](x, ws[:, self.image_style[level]])
        return image * 0.5 + 0.5  # the network works in [-1, 1]; every family emits [0, 1]


class StyleGenerator(nn.Module):
    """Mapping + synthesis, with the style-mixing and truncation helpers the family and its graphs use."""

    def __init__(self, spec: DataSpec, latent_dim: int, w_dim: int, widths: list[int], mapping_layers: int,
                 lr_mul: float, noise: bool) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.mapping = MappingNetwork(latent_dim, w_dim, mapping_layers, lr_mul)
        self.synthesis = SynthesisNetwork(spec, widths, w_dim, noise)
        self.num_ws = self.synthesis.num_ws

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """One w for every layer: N x w_dim -> N x num_ws x w_dim."""
        return w[:, None, :].expand(-1, self.num_ws, -1)

    def forward(self, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.broadcast(self.mapping(z)), noise)


class MappingGraph(nn.Module):
    """The exported mapping: z and psi (N x 1) -> truncated w; the tracked mean w is baked into the graph."""

    def __init__(self, generator: StyleGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        mapping = self.generator.mapping
        return mapping.truncate(mapping(z), psi)


class SynthesisGraph(nn.Module):
    """The exported synthesis: per-layer styles and flattened noise -> image (styles mixed outside the graph)."""

    def __init__(self, generator: StyleGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, ws: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.generator.synthesis(ws, noise)

"""CycleGAN's networks (Zhu et al. 2017): a ResNet image-to-image generator, a PatchGAN discriminator, the image
history buffer and the bank of domain-B source images, the last two as buffers so they travel with the weights."""

from __future__ import annotations

import torch
from torch import nn

from genops.models.networks.conv import level_sizes
from genops.models.sharding import BatchNoise


class ResidualBlock(nn.Module):
    """x + (reflect-pad, conv 3x3, instance norm, ReLU, reflect-pad, conv 3x3, instance norm)(x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Image in [0, 1] -> image in [0, 1]: c7s1-w, `downsamplings` stride-2 convs (channels doubling), `blocks`
    residual blocks, as many transposed convs back to the input size, c7s1-C with tanh (rescaled to [0, 1])."""

    def __init__(self, channels: int, height: int, width: int, base: int, downsamplings: int, blocks: int) -> None:
        super().__init__()
        sizes = level_sizes(height, width, downsamplings, min_size=2)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, base, 7), nn.InstanceNorm2d(base),
                                   nn.ReLU()]
        c = base
        for _ in sizes[1:]:
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * c), nn.ReLU()]
            c *= 2
        layers += [ResidualBlock(c) for _ in range(blocks)]
        for level in range(len(sizes) - 1, 0, -1):
            (h_in, w_in), (h, w) = sizes[level], sizes[level - 1]
            # kernel 3, stride 2, padding 1 gives 2n - 1; output_padding adds the 1 back where the size was even
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1,
                                          output_padding=(h - (2 * h_in - 1), w - (2 * w_in - 1))),
                       nn.InstanceNorm2d(c // 2), nn.ReLU()]
            c //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, channels, 7), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.body(x * 2 - 1) + 1) / 2


class PatchDiscriminator(nn.Module):
    """Image in [0, 1] -> a map of real/fake scores, one per overlapping patch (PatchGAN, Isola et al. 2017)."""

    def __init__(self, channels: int, widths: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for i, w in enumerate(widths):
            layers.append(nn.Conv2d(c, w, 4, stride=2, padding=1))
            if i > 0:  # no norm on the first layer (as in pix2pix / CycleGAN)
                layers.append(nn.InstanceNorm2d(w))
            layers.append(nn.LeakyReLU(0.2))
            c = w
        layers.append(nn.Conv2d(c, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1)


class ImageHistory(nn.Module):
    """The last `size` fakes a discriminator saw (Shrivastava et al. 2017), as buffers so a resumed run continues
    with the same history. `query` returns the batch with, once the buffer is full, each image swapped with
    probability 0.5 for a stored one (which the new image replaces); the draws come from the step's noise."""

    def __init__(self, size: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, fakes: torch.Tensor, noise: BatchNoise) -> torch.Tensor:
        if self.size == 0:
            return fakes
        n = fakes.shape[0]
        swap_p = noise.rand(n).to(fakes.device)  # drawn every call: the generator advances alike every step
        slots = noise.randint(self.size, n).to(fakes.device)
        fakes = fakes.detach().to(self.images.dtype)
        out = fakes.clone()
        stored = int(self.count)
        fill = min(n, self.size - stored)
        if fill:  # not full yet: keep the new fakes, return them unchanged
            self.images[stored: stored + fill] = fakes[:fill]
            self.count += fill
        rows = torch.arange(fill, n, device=fakes.device)
        rows = rows[swap_p[fill:] > 0.5]
        if len(rows):
            out[rows] = self.images[slots[rows]]
            self.images[slots[rows]] = fakes[rows]
        return out


class ImageBank(nn.Module):
    """Source images carried by the model (uint8 buffer): index -> image in [0, 1]. Exported as its own graph, so
    a registered version samples from it through ONNX Runtime with no torch weights."""

    def __init__(self, size: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.register_buffer("images", torch.zeros(size, *shape, dtype=torch.uint8))

    def __len__(self) -> int:
        return self.images.shape[0]

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index].float() / 255.0

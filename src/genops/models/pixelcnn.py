"""Gated PixelCNN (van den Oord et al. 2016), optionally class-conditional.

    p(x) = prod_i prod_c p(x_{i,c} | x_{<i}, x_{i,<c} [, y])     raster order, then R -> G -> B

Each sub-pixel gets a 256-way softmax over its 8-bit value. A categorical needs no distributional
assumption (it can be multimodal, skewed, or put mass on exactly 0 and 255), and its log-probability
*is* the exact discrete likelihood, so the test NLL is exact rather than a bound (cf. the VAE).

Causality comes from masked convolutions. A vertical stack sees only rows above the current pixel,
a horizontal stack only pixels to its left in the current row; the vertical stack feeds the
horizontal one, so together they cover everything before the pixel (the single masked 3x3 stack of
the original PixelCNN leaves a "blind spot" to the upper right). The first layer is mask A (the
current pixel is hidden), later layers mask B (a feature may see its own position's features,
which by then only encode earlier inputs). For RGB, feature maps are split into R, G, B channel
groups and the taps at the current position are masked per group: under mask A group c sees input
groups < c (G sees R, B sees R and G), under mask B groups <= c, as in the original PixelCNN.
Conditioning adds a label embedding as a bias to every gate. Gates: tanh(a) * sigmoid(b).

Sampling is one network pass per sub-pixel (H x W x C passes) with the loop outside the graph, so
the same loop drives torch and ONNX Runtime. Draws use inverse-CDF sampling on uniforms taken from
the caller's generator, so both back-ends turn the same uniforms into the same images.
`GatedPixelCNN` is reused by the VQ-VAE as its prior over code grids (integer inputs, embedded).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.base import ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.likelihoods import nats_to_bits_per_dim

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
                 pad: tuple[int, int, int, int]) -> None:
        super().__init__(in_channels, out_channels, tuple(mask.shape[2:]))
        self.register_buffer("mask", mask, persistent=False)
        self.pad = pad  # (left, right, top, bottom) as in F.pad
        with torch.no_grad():
            self.weight.mul_(mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias)


def _gate(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated layer: a vertical and a horizontal stack, the vertical feeding the horizontal.

    Vertical: kernel (k//2 + 1) x k over rows i - k//2 .. i; mask A drops row i, so the first layer
    sees only rows above and no later layer can bring row i back. Horizontal: kernel 1 x (k//2 + 1)
    over columns j - k//2 .. j, the current column masked per channel group.
    """

    def __init__(self, c_in: int, hidden: int, groups: int, kernel: int, first: bool, num_classes: int) -> None:
        super().__init__()
        half = kernel // 2
        in_g, h_g = channel_groups(c_in, groups), channel_groups(hidden, groups)
        gate_g = torch.cat([h_g, h_g])  # gate halves (a, b) keep the groups of the channels they multiply
        v_mask = torch.ones(2 * hidden, c_in, half + 1, kernel)
        if first:
            v_mask[:, :, -1] = 0.0
        self.v_conv = MaskedConv2d(c_in, 2 * hidden, v_mask, (half, half, half, 0))
        h_mask = torch.ones(2 * hidden, c_in, 1, half + 1)
        h_mask[:, :, 0, -1] = center_mask(gate_g, in_g, include_self=not first)
        self.h_conv = MaskedConv2d(c_in, 2 * hidden, h_mask, (half, 0, 0, 0))
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
                 kernel: int = 5, num_classes: int = 0, embed_dim: int = 0) -> None:
        super().__init__()
        if kernel < 3 or kernel % 2 == 0:
            raise GenopsError(f"pixelcnn kernel={kernel}: expected an odd size >= 3")
        if layers < 1:
            raise GenopsError(f"pixelcnn layers={layers}: expected at least 1")
        self.in_channels, self.n_values = in_channels, n_values
        hidden = math.ceil(hidden / in_channels) * in_channels
        self.embed = nn.Embedding(n_values, embed_dim) if embed_dim else None
        c_in = in_channels * embed_dim if embed_dim else in_channels
        self.layers = nn.ModuleList(
            GatedLayer(c_in if i == 0 else hidden, hidden, in_channels, kernel, i == 0, num_classes)
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


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Categorical draws (N,) from logits (N, K) and uniforms (N,) in [0, 1).

    Both back-ends' logits go through the same float64 arithmetic on the CPU, so torch and ONNX
    Runtime produce the same draw unless a uniform lands within float error of a bin edge.
    """
    cdf = torch.softmax(logits.detach().double().cpu(), dim=1).cumsum(1)
    target = (u.double().cpu() * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=logits.shape[1] - 1)


@torch.no_grad()
def sample_autoregressive(net: Net, n: int, shape: tuple[int, int, int], generator: torch.Generator,
                          labels: torch.Tensor | None, to_input: Callable[[torch.Tensor], torch.Tensor],
                          device: torch.device | str = "cpu", progress: bool = True,
                          desc: str = "sample") -> torch.Tensor:
    """Fill an (n, C, H, W) grid of indices in raster order, sub-pixel by sub-pixel: one pass each.

    `net(to_input(indices)[, labels])` returns logits (N, K, C, H, W) or (N, K, H, W) for C = 1. The
    uniforms for every step are drawn up front from `generator` (CPU), so a run's images depend only
    on the seed and the network, not on the back-end or batch timing.
    """
    c, h, w = shape
    u = torch.rand(n, c, h, w, generator=generator)
    grid = torch.zeros(n, c, h, w, dtype=torch.long, device=device)
    extra = () if labels is None else (labels.to(device),)
    with tqdm(total=c * h * w, desc=desc, disable=not progress, leave=False, mininterval=1.0) as bar:
        for i in range(h):
            # Row i depends only on rows <= i (causal padding), so the pass skips the rows below:
            # half the work on average. Two rows at least, so graphs never see a size-1 row axis.
            rows = min(h, max(i + 1, 2))
            for j in range(w):
                for k in range(c):
                    logits = net(to_input(grid[:, :, :rows]), *extra)
                    if logits.dim() == 4:
                        logits = logits.unsqueeze(2)
                    grid[:, k, i, j] = inverse_cdf(logits[:, :, k, i, j], u[:, k, i, j]).to(grid.device)
                    bar.update(1)
    return grid


class PixelCNN(Family):
    name = "pixelcnn"
    info = FamilyInfo(
        summary="Gated PixelCNN: masked vertical/horizontal stacks, 256-way softmax per sub-pixel, exact NLL.",
        samples_by="one network pass per sub-pixel in raster order (R, G, B within a pixel), inverse-CDF draws",
        limits=["sampling is sequential: H x W x C network passes per batch, orders of magnitude slower "
                "than one-pass generators", "no latent space: no encoder, no interpolation",
                "the receptive field is local, so samples are locally sharp but can lack global structure"],
        loop_outside_graph=True,
    )
    primary_metric = Metric("fid", "min")
    monitor_loss = "loss"

    def __init__(self, cfg: dict, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.net = GatedPixelCNN(spec.channels, LEVELS, hidden=int(cfg.get("hidden", 32)),
                                 layers=int(cfg.get("layers", 6)), kernel=int(cfg.get("kernel", 5)),
                                 num_classes=spec.num_classes if self.conditional else 0)

    def networks(self) -> dict[str, nn.Module]:
        return {"pixelcnn": self.net}

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {"pixelcnn": torch.optim.Adam(self.net.parameters(), lr=float(self.cfg.get("lr", lr)))}

    def _labels(self, batch: Batch) -> torch.Tensor | None:
        return batch.y if self.conditional else None

    @staticmethod
    def targets(x: torch.Tensor) -> torch.Tensor:
        """Pixel floats k / 255 -> integer values k."""
        return (x * (LEVELS - 1)).round().long().clamp(0, LEVELS - 1)

    def nll(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(x) in nats, one value per image: the sum of every sub-pixel's -log p."""
        logits = self.net(x, y).float()
        return F.cross_entropy(logits, self.targets(x), reduction="none").flatten(1).sum(1)

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            logits = self.net(batch.x, self._labels(batch))
        loss = F.cross_entropy(logits.float(), self.targets(batch.x))  # nats per sub-pixel
        opt = ctx.optimizers["pixelcnn"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "bpd": loss.item() / math.log(2.0)}

    def sampling_nets(self) -> dict[str, Net]:
        return {"pixelcnn": self.net}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, progress: bool = True) -> torch.Tensor:
        nets = nets or self.sampling_nets()
        labels = labels if labels is not None else self.default_labels(n)
        values = sample_autoregressive(nets["pixelcnn"], n, self.spec.shape, generator, labels,
                                       lambda grid: grid.float() / (LEVELS - 1), self.device, progress,
                                       desc=f"sample {self.name}")
        return values.float() / (LEVELS - 1)

    def export_specs(self) -> list[ExportSpec]:
        image = torch.rand(2, *self.spec.shape)
        if self.conditional:
            return [ExportSpec("pixelcnn", self.net, (image, torch.zeros(2, dtype=torch.long)),
                               ["image", "label"], ["logits"], {"image": {2: "rows"}})]
        return [ExportSpec("pixelcnn", self.net, (image,), ["image"], ["logits"], {"image": {2: "rows"}})]

    @torch.no_grad()
    def evaluate(self, test: ImageSet, cfg: dict, generator: torch.Generator) -> dict[str, float]:
        """Exact test NLL (nats per image, bits/dim) on the first `nll_subset` test images."""
        subset = test.head(int(cfg.get("nll_subset") or len(test)))
        total, count = 0.0, 0
        for batch in subset.to(self.device).batches(int(cfg.get("batch_size", 256))):
            total += self.nll(batch.x, self._labels(batch)).sum().item()
            count += batch.x.shape[0]
        nll = total / max(count, 1)
        return {"test_nll_nats": nll, "test_nll_bpd": nats_to_bits_per_dim(nll, self.spec.dims),
                "nll_images": float(count)}

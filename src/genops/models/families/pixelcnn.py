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
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from genops.config.families import PixelCNNConfig
from genops.config.sections import EvaluateConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.models.autoregressive import sample_autoregressive
from genops.models.capabilities import OwnMetrics
from genops.models.family import EvaluatorView, ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.likelihoods import nats_to_bits_per_dim
from genops.models.networks.pixelcnn import LEVELS, GatedPixelCNN


class PixelCNN(Family, OwnMetrics):
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

    cfg: PixelCNNConfig

    def __init__(self, cfg: PixelCNNConfig, spec: DataSpec, base: Family | None = None) -> None:
        super().__init__(cfg, spec, base)
        self.net = GatedPixelCNN(spec.channels, LEVELS, hidden=cfg.width, layers=cfg.depth, kernel=cfg.kernel,
                                 num_classes=spec.num_classes if self.conditional else 0,
                                 dilations=tuple(cfg.dilations))

    def networks(self) -> dict[str, nn.Module]:
        return {"pixelcnn": self.net}

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {"pixelcnn": torch.optim.Adam(self.net.parameters(), lr=lr)}

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
            logits = self.net(batch.x, self.labels_of(batch))
        loss = F.cross_entropy(logits.float(), self.targets(batch.x))  # nats per sub-pixel
        ctx.backward("pixelcnn", loss)
        ctx.optimizers["pixelcnn"].step()
        return {"loss": loss.detach(), "bpd": loss.detach().double() / math.log(2.0)}

    def sampling_nets(self) -> dict[str, Net]:
        return {"pixelcnn": self.net}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, progress: bool = True) -> torch.Tensor:
        nets = nets or self.sampling_nets()
        labels = self.sampling_labels(n, labels)
        values = sample_autoregressive(nets["pixelcnn"], n, self.spec.shape, generator, labels,
                                       lambda grid: grid.float() / (LEVELS - 1), self.device, progress,
                                       desc=f"sample {self.name}")
        return values.float() / (LEVELS - 1)

    def sampling_passes(self, **options) -> int:
        """One network pass per sub-pixel, in raster order."""
        return self.spec.channels * self.spec.height * self.spec.width

    def export_specs(self) -> list[ExportSpec]:
        image = torch.rand(2, *self.spec.shape)
        if self.conditional:
            return [ExportSpec("pixelcnn", self.net, (image, torch.zeros(2, dtype=torch.long)),
                               ["image", "label"], ["logits"], {"image": {2: "rows"}})]
        return [ExportSpec("pixelcnn", self.net, (image,), ["image"], ["logits"], {"image": {2: "rows"}})]

    @torch.no_grad()
    def evaluate(self, test: ImageSet, cfg: EvaluateConfig, generator: torch.Generator,
                 evaluator: EvaluatorView | None = None) -> dict[str, float]:
        """Exact test NLL (nats per image, bits/dim) on the first `nll_subset` test images."""
        subset = test.head(cfg.nll_subset)
        total, count = 0.0, 0
        for batch in subset.to(self.device).batches(cfg.batch_size):
            total += self.nll(batch.x, self.labels_of(batch)).sum().item()
            count += batch.x.shape[0]
        nll = total / max(count, 1)
        return {"test_nll_nats": nll, "test_nll_bpd": nats_to_bits_per_dim(nll, self.spec.dims),
                "nll_images": float(count)}

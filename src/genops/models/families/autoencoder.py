"""Deterministic convolutional autoencoder: the baseline that reconstructs but cannot really generate.

    z = enc(x),  x_hat = sigmoid(dec(z)),  loss = ||x - x_hat||^2

Nothing in training shapes the latent space into a distribution we can draw from. To "sample" at
all, after training we fit a full-covariance Gaussian N(m, S) to the training latents and decode
z = m + L eps (S = L L^T). Where the latents are not Gaussian, decoded samples fall between the
modes: this is the textbook failure that the VAE's KL term exists to fix.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from genops.config.families import AutoencoderConfig
from genops.config.sections import EvaluateConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.models.capabilities import FitsData, Interpolates, OwnMetrics
from genops.models.family import EvaluatorView, ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.networks.conv import ConvDecoder, ConvEncoder
from genops.models.networks.graphs import LatentGaussianSampler


class Autoencoder(Family, FitsData, OwnMetrics, Interpolates):
    name = "autoencoder"
    info = FamilyInfo(
        summary="Deterministic conv autoencoder trained on reconstruction MSE (baseline).",
        samples_by="decoding draws from a full-covariance Gaussian fitted to the training latents",
        limits=["not a generative model: the latent space has no prior, so samples from the fitted Gaussian "
                "often decode to implausible blends", "no likelihood"],
    )
    primary_metric = Metric("fid", "min")

    cfg: AutoencoderConfig

    def __init__(self, cfg: AutoencoderConfig, spec: DataSpec, base: Family | None = None) -> None:
        super().__init__(cfg, spec, base)
        self.latent_dim = cfg.latent_dim
        widths = list(cfg.widths)
        self.encoder = ConvEncoder(spec, widths, self.latent_dim)
        self.decoder = ConvDecoder(spec, widths, self.latent_dim, spec.channels)
        # The fitted latent Gaussian is part of the model: buffers are checkpointed and exported.
        self.latent = nn.Module()
        self.latent.register_buffer("mean", torch.zeros(self.latent_dim))
        self.latent.register_buffer("chol", torch.eye(self.latent_dim))

    def networks(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder, "latent": self.latent}

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        return {"ae": torch.optim.Adam(params, lr=lr)}

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.encoder(x)))

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            x_hat = self.reconstruct(batch.x)
        loss = (x_hat.float() - batch.x).pow(2).mean()
        ctx.backward("ae", loss)
        ctx.optimizers["ae"].step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def on_train_end(self, train: ImageSet, batch_size: int) -> None:
        """Fit N(m, S) to the training latents (float64 for a stable Cholesky)."""
        self.train_mode(False)
        z = train.to(self.device).map_batches(batch_size, lambda b: self.encoder(b.x))[0].double()
        mean = z.mean(0)
        cov = torch.cov(z.T) + 1e-6 * torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
        self.latent.mean.copy_(mean.float())
        self.latent.chol.copy_(torch.linalg.cholesky(cov).float())

    def _sampler(self) -> LatentGaussianSampler:
        return LatentGaussianSampler(nn.Sequential(self.decoder, nn.Sigmoid()), self.latent.mean, self.latent.chol)

    def sampling_nets(self) -> dict[str, Net]:
        return {"sampler": self._sampler()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, **kwargs) -> torch.Tensor:
        nets = nets or self.sampling_nets()
        noise = torch.randn(n, self.latent_dim, generator=generator)
        return nets["sampler"](noise.to(self.device)).clamp(0, 1)

    def export_specs(self) -> list[ExportSpec]:
        return [ExportSpec("sampler", self._sampler(), (torch.randn(2, self.latent_dim),), ["noise"], ["image"]),
                ExportSpec("encoder", self.encoder, (torch.rand(2, *self.spec.shape),), ["image"], ["z"])]

    @torch.no_grad()
    def evaluate(self, test: ImageSet, cfg: EvaluateConfig, generator: torch.Generator,
                 evaluator: EvaluatorView | None = None) -> dict[str, float]:
        mse, count = 0.0, 0
        for batch in test.to(self.device).batches(cfg.batch_size):
            mse += (self.reconstruct(batch.x) - batch.x).pow(2).flatten(1).mean(1).sum().item()
            count += batch.x.shape[0]
        return {"test_recon_mse": mse / count}

    @torch.no_grad()
    def interpolate(self, a: Batch, b: Batch, steps: int) -> torch.Tensor:
        za, zb = self.encoder(a.x), self.encoder(b.x)
        rows = [torch.sigmoid(self.decoder((1 - t) * za + t * zb)) for t in torch.linspace(0, 1, steps)]
        return torch.stack(rows, dim=1).flatten(0, 1)

"""Latent diffusion (Rombach et al. 2022): the same DDPM/DDIM/guidance machinery, run in a VAE's latent space.

The VAE is not trained here: it is the registered `vae` model (the train stage resolves it from the MLflow
registry, records which version, and hands it to the constructor as `base`). Its encoder maps training images
to latents z ~ q(z | x) (a fresh posterior sample every step, as for a KL-regularised autoencoder in the
paper), which are standardised per dimension with statistics of the training set (the paper's "scale factor",
so the forward process' N(0, I) end point matches the data's scale). A small residual MLP denoiser then learns
eps(z_t, t[, y]); sampling runs DDIM/DDPM on latents and decodes the result with the VAE decoder.

Why it pays: the diffused variable has latent_dim values instead of C x H x W, so a training step and a
sampling step cost a fraction of the pixel U-Net's. What it costs: samples can be no better than the VAE
decoder's reconstructions, and the likelihood is not comparable (no pixel-space bound is reported).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from genops.config.families import LatentDiffusionConfig, VAEConfig
from genops.config.sections import EvaluateConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.capabilities import FitsData
from genops.models.families.diffusion import DenoisingDiffusion
from genops.models.families.vae import VAE
from genops.models.family import EvaluatorView, ExportSpec, Family, FamilyInfo, Metric, Net
from genops.models.likelihoods import reparameterize
from genops.models.networks.graphs import LatentDecoder, LatentStats
from genops.models.networks.mlp import MLPDenoiser
from genops.models.sharding import BatchNoise


class LatentDiffusion(DenoisingDiffusion, FitsData):
    name = "latent-diffusion"
    info = FamilyInfo(
        summary="Latent diffusion (Rombach et al. 2022): DDPM/DDIM with classifier-free guidance in the latent "
                "space of the registered VAE, an MLP denoiser with EMA weights, decoded by the VAE decoder.",
        samples_by="DDIM (or ancestral DDPM) on standardised VAE latents with the EMA denoiser, then one pass "
                   "of the VAE decoder; the loop runs outside the exported graphs",
        limits=["samples are bounded by the VAE decoder: blur the VAE has, latent diffusion has too",
                "trained on one registered VAE version (see its lineage tags): a new VAE needs retraining",
                "no pixel-space likelihood: the reported loss is the latent L_simple on test images"],
        loop_outside_graph=True,
    )
    primary_metric = Metric("fid", "min")

    cfg: LatentDiffusionConfig

    def __init__(self, cfg: LatentDiffusionConfig, spec: DataSpec, base: Family | None = None) -> None:
        """`base` is the registered VAE (with weights when training; an untrained one of the same shape when
        a bundle is rebuilt, whose weights are then loaded with this family's)."""
        if not isinstance(base, VAE):
            raise GenopsError(f"latent-diffusion needs a vae as its base, got {type(base).__name__}")
        if base.conditional:
            raise GenopsError("latent-diffusion: the base VAE is conditional (CVAE); its decoder needs labels the "
                              "latent sampler does not have: register an unconditional vae as the base")
        # A fresh VAE of the base's shape, then the base's weights: the initialisation draws stay those of a
        # newly built VAE, so the denoiser's initial weights do not depend on how the base was obtained.
        self.vae = VAE(base.cfg, spec)
        for name, net in self.vae.networks().items():
            net.load_state_dict(base.networks()[name].state_dict())
        self.stats = LatentStats(self.vae.latent_dim)
        super().__init__(cfg, spec, base)
        self.x_shape = (self.vae.latent_dim,)
        self.vae.train_mode(False)

    def build_denoiser(self) -> nn.Module:
        return MLPDenoiser(self.vae.latent_dim, self.cfg.width, self.cfg.depth, self.num_classes)

    @property
    def base_cfg(self) -> VAEConfig:
        """The base VAE's config, saved with this family so the bundle can rebuild it."""
        return self.vae.cfg

    def networks(self) -> dict[str, nn.Module]:
        return {**super().networks(), "stats": self.stats, "vae_encoder": self.vae.encoder,
                "vae_decoder": self.vae.decoder}

    def train_mode(self, on: bool = True) -> None:
        super().train_mode(on)
        self.vae.train_mode(False)  # frozen: never update its batch-norm statistics

    @torch.no_grad()
    def on_train_start(self, train: ImageSet, batch_size: int) -> None:
        """Standardise latents: mean and std of q(z | x) over the training images (law of total variance)."""
        def moments(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
            mu, logvar = self.vae.encoder(batch.x)
            return mu.float(), logvar.float().exp()

        mu, var = train.to(self.device).map_batches(batch_size, moments)
        self.stats.mean.copy_(mu.mean(0))
        self.stats.std.copy_((mu.var(0) + var.mean(0)).sqrt().clamp_min(1e-4))

    @torch.no_grad()
    def to_diffusion_space(self, batch: Batch, noise: BatchNoise | torch.Generator) -> torch.Tensor:
        mu, logvar = self.vae.encoder(batch.x)
        z = reparameterize(mu.float(), logvar.float(), noise)
        return (z - self.stats.mean) / self.stats.std

    def from_diffusion_space(self, x0: torch.Tensor, nets: Mapping[str, Net] | None = None) -> torch.Tensor:
        return (nets or self.sampling_nets())["decoder"](x0).clamp(0, 1)

    def sampling_nets(self) -> dict[str, Net]:
        return {**super().sampling_nets(), "decoder": LatentDecoder(self.stats, self.vae.decoder)}

    def export_specs(self) -> list[ExportSpec]:
        latent = torch.randn(2, self.vae.latent_dim, device=self.device)
        return [*super().export_specs(),
                ExportSpec("decoder", LatentDecoder(self.stats, self.vae.decoder), (latent,), ["latent"], ["image"])]

    def num_parameters(self) -> int:
        """The denoiser's parameters (the VAE's are the base model's)."""
        return sum(p.numel() for p in self.net.parameters())

    @torch.no_grad()
    def evaluate(self, test: ImageSet, cfg: EvaluateConfig, generator: torch.Generator,
                 evaluator: EvaluatorView | None = None) -> dict[str, float]:
        """Latent L_simple on test images (the training objective on held-out data) and the VAE's
        reconstruction error, the ceiling on sample sharpness."""
        subset = test.head(cfg.nll_subset)
        loss_sum, mse_sum, count = 0.0, 0.0, 0
        net = self.ema.module
        for batch in subset.to(self.device).batches(cfg.batch_size):
            x0 = self.to_diffusion_space(batch, generator)
            n = x0.shape[0]
            t = torch.randint(0, self.T, (n,), generator=generator)
            eps = torch.randn(x0.shape, generator=generator).to(x0.device)
            x_t = self.schedule.q_sample(x0, t, eps)
            target = eps if self.prediction == "eps" else self.schedule.v_target(x0, t, eps)
            out = net(x_t, t.to(x0.device, torch.float32), self.labels_of(batch)).float()
            loss_sum += F.mse_loss(out, target, reduction="none").mean(1).sum().item()
            recon = self.vae.decoder(self.vae.encoder(batch.x)[0])[0]
            mse_sum += F.mse_loss(recon, batch.x, reduction="none").flatten(1).mean(1).sum().item()
            count += n
        return {"test_latent_loss": loss_sum / max(count, 1), "vae_recon_mse": mse_sum / max(count, 1),
                "latent_dim": float(self.vae.latent_dim)}

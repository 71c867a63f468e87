"""Latent diffusion (Rombach et al. 2022): the same DDPM/DDIM/guidance machinery, run in a VAE's latent space.

The VAE is not trained here: it is the registered `vae` model (the train stage resolves it from the MLflow
registry and records which version). Its encoder maps training images to latents z ~ q(z | x) (a fresh
posterior sample every step, as for a KL-regularised autoencoder in the paper), which are standardised
per dimension with statistics of the training set (the paper's "scale factor", so the forward process'
N(0, I) end point matches the data's scale). A small residual MLP denoiser then learns eps(z_t, t[, y]);
sampling runs DDIM/DDPM on latents and decodes the result with the VAE decoder.

Why it pays: the diffused variable has latent_dim values instead of C x H x W, so a training step and a
sampling step cost a fraction of the pixel U-Net's. What it costs: samples can be no better than the VAE
decoder's reconstructions, and the likelihood is not comparable (no pixel-space bound is reported).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.base import ExportSpec, Family, FamilyInfo, Metric, Net
from genops.models.diffusion import Diffusion, SinusoidalEmbedding, conditioning
from genops.models.vae import VAE


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


class LatentStats(nn.Module):
    """Per-dimension mean and standard deviation of the training latents (buffers: saved with the weights)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))


class LatentDecoder(nn.Module):
    """The exported decoder graph: standardised latent -> image (the VAE decoder's mean)."""

    def __init__(self, stats: LatentStats, vae: VAE) -> None:
        super().__init__()
        self.stats, self.decoder = stats, vae.decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent * self.stats.std + self.stats.mean)[0].clamp(0, 1)


class LatentDiffusion(Diffusion):
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
    base_family = "vae"

    def __init__(self, cfg: dict, spec: DataSpec) -> None:
        # The base VAE's own params (filled in from the registry by the train stage; defaults otherwise).
        self.vae = VAE(dict(cfg.get("base_cfg") or {}), spec)
        if self.vae.conditional:
            raise GenopsError("latent-diffusion: the base VAE is conditional (CVAE); its decoder needs labels the "
                              "latent sampler does not have: register an unconditional vae as the base")
        self.stats = LatentStats(self.vae.latent_dim)
        super().__init__({"clip_denoised": False, **cfg}, spec)
        self.x_shape = (self.vae.latent_dim,)
        self.vae.train_mode(False)

    def build_denoiser(self) -> nn.Module:
        return MLPDenoiser(self.vae.latent_dim, int(self.cfg.get("width", 256)), int(self.cfg.get("blocks", 4)),
                           self.num_classes)

    def attach_base(self, base: Family) -> None:
        """Adopt the registered VAE: its params (so the bundle can rebuild it) and its weights."""
        if not isinstance(base, VAE):
            raise GenopsError(f"latent-diffusion needs a vae as its base, got {type(base).__name__}")
        if base.conditional:
            raise GenopsError("latent-diffusion: the registered base vae is conditional; use an unconditional one")
        self.cfg["base_cfg"] = dict(base.cfg)
        device = self.device
        self.vae = VAE(dict(base.cfg), base.spec)
        for name, net in self.vae.networks().items():
            net.load_state_dict(base.networks()[name].state_dict())
        self.vae.to(device).train_mode(False)
        if self.stats.mean.numel() != self.vae.latent_dim:
            self.stats = LatentStats(self.vae.latent_dim).to(device)
            self.x_shape = (self.vae.latent_dim,)
            self.net = self.build_denoiser().to(device)
            from torch.optim.swa_utils import AveragedModel

            self.ema = AveragedModel(self.net, multi_avg_fn=self.ema.multi_avg_fn)

    def networks(self) -> dict[str, nn.Module]:
        return {**super().networks(), "stats": self.stats, "vae_encoder": self.vae.encoder,
                "vae_decoder": self.vae.decoder}

    def train_mode(self, on: bool = True) -> None:
        super().train_mode(on)
        self.vae.train_mode(False)  # frozen: never update its batch-norm statistics

    @torch.no_grad()
    def on_train_start(self, train: ImageSet, batch_size: int) -> None:
        """Standardise latents: mean and std of q(z | x) over the training images (law of total variance)."""
        mus, variances = [], []
        for batch in train.to(self.device).batches(batch_size):
            mu, logvar = self.vae.encoder(batch.x)
            mus.append(mu.float())
            variances.append(logvar.float().exp())
        mu, var = torch.cat(mus), torch.cat(variances)
        self.stats.mean.copy_(mu.mean(0))
        self.stats.std.copy_((mu.var(0) + var.mean(0)).sqrt().clamp_min(1e-4))

    @torch.no_grad()
    def to_diffusion_space(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        mu, logvar = self.vae.encoder(batch.x)
        z = VAE.reparameterize(mu.float(), logvar.float(), generator)
        return (z - self.stats.mean) / self.stats.std

    def from_diffusion_space(self, x0: torch.Tensor, nets: Mapping[str, Net] | None = None) -> torch.Tensor:
        return (nets or self.sampling_nets())["decoder"](x0).clamp(0, 1)

    def sampling_nets(self) -> dict[str, Net]:
        return {**super().sampling_nets(), "decoder": LatentDecoder(self.stats, self.vae)}

    def export_specs(self) -> list[ExportSpec]:
        latent = torch.randn(2, self.vae.latent_dim, device=self.device)
        return [*super().export_specs(),
                ExportSpec("decoder", LatentDecoder(self.stats, self.vae), (latent,), ["latent"], ["image"])]

    def num_parameters(self) -> int:
        """The denoiser's parameters (the VAE's are the base model's)."""
        return sum(p.numel() for p in self.net.parameters())

    @torch.no_grad()
    def evaluate(self, test: ImageSet, cfg: dict, generator: torch.Generator) -> dict[str, float]:
        """Latent L_simple on test images (the training objective on held-out data) and the VAE's
        reconstruction error, the ceiling on sample sharpness."""
        subset = test.head(int(cfg.get("nll_subset") or len(test)))
        loss_sum, mse_sum, count = 0.0, 0.0, 0
        net = self.ema.module
        for batch in subset.to(self.device).batches(int(cfg.get("batch_size", 256))):
            x0 = self.to_diffusion_space(batch, generator)
            n = x0.shape[0]
            t = torch.randint(0, self.T, (n,), generator=generator)
            eps = torch.randn(x0.shape, generator=generator).to(x0.device)
            x_t = self.schedule.q_sample(x0, t, eps)
            target = eps if self.prediction == "eps" else self.schedule.v_target(x0, t, eps)
            y = batch.y if self.conditional else None
            out = net(x_t, t.to(x0.device, torch.float32), y).float()
            loss_sum += F.mse_loss(out, target, reduction="none").mean(1).sum().item()
            recon = self.vae.decoder(self.vae.encoder(batch.x)[0])[0]
            mse_sum += F.mse_loss(recon, batch.x, reduction="none").flatten(1).mean(1).sum().item()
            count += n
        return {"test_latent_loss": loss_sum / max(count, 1), "vae_recon_mse": mse_sum / max(count, 1),
                "latent_dim": float(self.vae.latent_dim)}

"""DCGAN (Radford et al. 2016) with three objectives, spectral norm and class conditioning.

    D: maximise  E log D(x) + E log(1 - D(G(z)))                              (all objectives but WGAN)
    G: minimax         minimise E log(1 - D(G(z)))     -- saturates when D wins
       nonsaturating   maximise E log D(G(z))          -- Goodfellow's fix: strong gradients early
    WGAN-GP (Gulrajani et al. 2017): critic f without sigmoid,
       f: minimise E f(G(z)) - E f(x) + lambda E (||grad f(x_hat)|| - 1)^2,  x_hat on real-fake lines
       G: minimise -E f(G(z));  the critic takes n_critic steps per generator step

Architecture follows the DCGAN guidelines: strided (transposed) convolutions, no pooling, batch norm,
ReLU in G with a tanh output, LeakyReLU(0.2) in D. Conditioning: label embedding concatenated to z
in G, a projection discriminator (Miyato & Koyama 2018) in D. Updates alternate with separate
optimisers and learning rates (TTUR). One training step = one discriminator update; the generator
is updated every n_critic-th step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from genops.config.families import GanConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch
from genops.models.capabilities import InterpolatesNoise
from genops.models.families.adversarial import Adversarial, d_loss, g_loss, grad_norm
from genops.models.family import ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.latent_paths import slerp
from genops.models.networks.dcgan import Discriminator, Generator
from genops.models.networks.graphs import NoiseToImage
from genops.models.sharding import BatchNoise, batch_noise


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None,
                     noise: BatchNoise | torch.Generator | None = None) -> torch.Tensor:
    """E (||grad_x f(x_hat)|| - 1)^2 at random points on the lines between real and fake samples."""
    eps = batch_noise(noise).rand(real.shape[0], 1, 1, 1).to(real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad = torch.autograd.grad(critic(x_hat, y).sum(), x_hat, create_graph=True)[0]
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


class GAN(Adversarial, InterpolatesNoise):
    name = "gan"
    info = FamilyInfo(
        summary="DCGAN with minimax / non-saturating / WGAN-GP objectives, optional spectral norm, cGAN.",
        samples_by="one generator pass on z ~ N(0, I)",
        limits=["no likelihood and no encoder", "training is adversarial and can oscillate, diverge or "
                "mode-collapse: see recall / modes covered and the collapse warnings"],
    )
    primary_metric = Metric("fid", "min")
    monitor_loss = "loss_d"

    cfg: GanConfig

    def __init__(self, cfg: GanConfig, spec: DataSpec, base: Family | None = None) -> None:
        super().__init__(cfg, spec, base)
        self.objective = cfg.objective
        self.latent_dim = cfg.latent_dim
        self.n_critic = cfg.n_critic
        self.gp_weight = cfg.gp_weight
        k = spec.num_classes if self.conditional else 0
        self.G = Generator(spec, list(cfg.g_widths or cfg.widths), self.latent_dim, k)
        self.D = Discriminator(spec, list(cfg.d_widths or cfg.widths), k, cfg.d_norm, cfg.spectral_norm)

    def flop_cycle(self) -> int:
        return self.n_critic

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.G, "discriminator": self.D}

    def generator_parameters(self) -> list[nn.Parameter]:
        return list(self.G.parameters())

    def discriminators(self) -> dict[str, nn.Module]:
        return {"d": self.D}

    def _noise(self, n: int, generator: torch.Generator | BatchNoise) -> torch.Tensor:
        return batch_noise(generator).randn(n, self.latent_dim).to(self.device)

    def d_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        """One discriminator/critic update; G's weights are not touched."""
        y = self.labels_of(batch)
        with torch.no_grad():
            fake = self.G(self._noise(batch.x.shape[0], ctx.noise), y)
        with ctx.autocast():
            real_score, fake_score = self.D(batch.x, y).float(), self.D(fake, y).float()
        loss = d_loss(self.objective, real_score, fake_score)
        gp = torch.zeros(())
        if self.objective == "wgan-gp":
            gp = gradient_penalty(self.D, batch.x, fake, y, ctx.noise)
            loss = loss + self.gp_weight * gp
        ctx.backward("d", loss)
        grad = grad_norm(self.D)
        ctx.optimizers["d"].step()
        squash = (lambda s: s) if self.objective == "wgan-gp" else torch.sigmoid
        return {"loss_d": loss.detach(), "d_real": squash(real_score).mean().detach(),
                "d_fake": squash(fake_score).mean().detach(), "grad_norm_d": grad, "gp": gp.detach()}

    def g_step(self, n: int, ctx: StepContext, y: torch.Tensor | None) -> dict[str, float]:
        """One generator update through a frozen D; D's weights are not touched."""
        self.D.requires_grad_(False)
        try:
            with ctx.autocast():
                loss = g_loss(self.objective, self.D(self.G(self._noise(n, ctx.noise), y), y).float())
            ctx.backward("g", loss)
            grad = grad_norm(self.G)
            ctx.optimizers["g"].step()
        finally:
            self.D.requires_grad_(True)
        return {"loss_g": loss.detach(), "grad_norm_g": grad}

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        out = self.d_step(batch, ctx)
        if ctx.step % self.n_critic == self.n_critic - 1:
            self._last_g = self.g_step(batch.x.shape[0], ctx, self.labels_of(batch))
        return {**out, **getattr(self, "_last_g", {"loss_g": 0.0, "grad_norm_g": 0.0})}

    def sampling_nets(self) -> dict[str, Net]:
        return {"sampler": NoiseToImage(self.G)}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, **kwargs) -> torch.Tensor:
        nets = nets or self.sampling_nets()
        noise = self._noise(n, generator)
        labels = self.sampling_labels(n, labels)
        args = (noise,) if labels is None else (noise, labels.to(self.device))
        return nets["sampler"](*args).clamp(0, 1)

    def export_specs(self) -> list[ExportSpec]:
        noise = torch.randn(2, self.latent_dim)
        if self.conditional:
            return [ExportSpec("sampler", NoiseToImage(self.G), (noise, torch.zeros(2, dtype=torch.long)),
                               ["noise", "label"], ["image"])]
        return [ExportSpec("sampler", NoiseToImage(self.G), (noise,), ["noise"], ["image"])]

    @torch.no_grad()
    def noise_interpolation(self, n: int, steps: int, labels: torch.Tensor | None) -> torch.Tensor:
        """No encoder: spherical interpolation between seeded noise vectors (one row per pair)."""
        gen = torch.Generator().manual_seed(0)
        za, zb = self._noise(n, gen), self._noise(n, gen)
        y = labels if self.conditional else None
        rows = [self.G(slerp(za, zb, t), y) for t in torch.linspace(0, 1, steps)]
        return torch.stack(rows, dim=1).flatten(0, 1)



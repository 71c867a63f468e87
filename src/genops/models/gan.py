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
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from genops.data.spec import DataSpec
from genops.data.tensors import Batch
from genops.errors import GenopsError
from genops.models.base import ExportSpec, Family, FamilyInfo, Metric, Net, StepContext
from genops.models.layers import level_sizes

OBJECTIVES = ("minimax", "nonsaturating", "wgan-gp")


class Generator(nn.Module):
    """z [, y] -> image in [0, 1] (tanh in [-1, 1], rescaled so every family emits the same range)."""

    def __init__(self, spec: DataSpec, widths: list[int], latent_dim: int, num_classes: int) -> None:
        super().__init__()
        sizes = level_sizes(spec.height, spec.width, len(widths))
        levels = len(sizes) - 1
        chans = widths[:levels] or widths[:1]  # shallow -> deep, as in the discriminator
        self.start, self.c0 = sizes[-1], chans[-1]
        self.label_emb = nn.Embedding(num_classes, latent_dim) if num_classes else None
        in_dim = latent_dim * (2 if num_classes else 1)
        self.project = nn.Linear(in_dim, self.c0 * sizes[-1][0] * sizes[-1][1], bias=False)
        self.project_norm = nn.Sequential(nn.BatchNorm2d(self.c0), nn.ReLU())
        layers: list[nn.Module] = []
        c_in = self.c0
        for level in range(levels, 0, -1):
            (h_in, w_in), (h, w) = sizes[level], sizes[level - 1]
            c_out = chans[level - 2] if level >= 2 else max(chans[0] // 2, 8)
            # kernel 3, stride 2, padding 1 gives 2n-1; output_padding adds the 1 back where the size was even
            layers += [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, bias=False,
                                          output_padding=(h - (2 * h_in - 1), w - (2 * w_in - 1))),
                       nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        layers += [nn.Conv2d(c_in, spec.channels, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_emb is not None:
            z = torch.cat([z, self.label_emb(y)], dim=1)
        h = self.project_norm(self.project(z).view(-1, self.c0, *self.start))
        return (self.body(h) + 1) / 2


class Discriminator(nn.Module):
    """image [, y] -> one unnormalised score (a logit, or a WGAN critic value)."""

    def __init__(self, spec: DataSpec, widths: list[int], num_classes: int, norm: str, sn: bool) -> None:
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        sizes = level_sizes(spec.height, spec.width, len(widths))
        chans = widths[: len(sizes) - 1] or widths[:1]
        layers: list[nn.Module] = []
        c_in = spec.channels
        for i, c_out in enumerate(chans):
            layers.append(wrap(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)))
            if i > 0 and norm == "batch":  # DCGAN: no norm on D's first layer
                layers.append(nn.BatchNorm2d(c_out))
            elif i > 0 and norm == "layer":
                layers.append(nn.GroupNorm(1, c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.Flatten())
        h, w = sizes[len(chans)] if len(sizes) > len(chans) else sizes[-1]
        features = c_in * h * w
        self.out = wrap(nn.Linear(features, 1))
        self.label_emb = wrap(nn.Embedding(num_classes, features)) if num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(x * 2 - 1)
        score = self.out(h).squeeze(1)
        if self.label_emb is not None:
            score = score + (self.label_emb(y) * h).sum(1)  # projection discriminator
        return score


def d_loss(objective: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator / critic loss from its scores on real and fake (without the gradient penalty)."""
    if objective == "wgan-gp":
        return fake.mean() - real.mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()  # BCE with targets 1 (real), 0 (fake)


def g_loss(objective: str, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss from D's scores (logits) on fakes."""
    if objective == "minimax":
        return -F.softplus(fake).mean()  # E log(1 - D(G(z))) = -E softplus(logit)
    if objective == "nonsaturating":
        return F.softplus(-fake).mean()  # -E log D(G(z))
    return -fake.mean()  # WGAN


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """E (||grad_x f(x_hat)|| - 1)^2 at random points on the lines between real and fake samples."""
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad = torch.autograd.grad(critic(x_hat, y).sum(), x_hat, create_graph=True)[0]
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def _grad_norm(module: nn.Module) -> float:
    norms = [p.grad.norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


class GanSampler(nn.Module):
    """The exported sampler graph: noise [, label] -> image."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, noise: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(noise, label)


class GAN(Family):
    name = "gan"
    info = FamilyInfo(
        summary="DCGAN with minimax / non-saturating / WGAN-GP objectives, optional spectral norm, cGAN.",
        samples_by="one generator pass on z ~ N(0, I)",
        limits=["no likelihood and no encoder", "training is adversarial and can oscillate, diverge or "
                "mode-collapse: see recall / modes covered and the collapse warnings"],
    )
    primary_metric = Metric("fid", "min")
    monitor_loss = "loss_d"

    def __init__(self, cfg: dict, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        default = "wgan-gp" if self.name == "wgan-gp" else "nonsaturating"  # the registered name implies it
        self.objective = str(cfg.get("objective", default))
        if self.objective not in OBJECTIVES:
            raise GenopsError(f"{self.name}.objective={self.objective!r}: expected one of {', '.join(OBJECTIVES)}")
        self.latent_dim = int(cfg.get("latent_dim", 64))
        self.n_critic = int(cfg.get("n_critic", 5 if self.objective == "wgan-gp" else 1))
        self.gp_weight = float(cfg.get("gp_weight", 10.0))
        k = spec.num_classes if self.conditional else 0
        norm = str(cfg.get("d_norm", "none" if self.objective == "wgan-gp" else "batch"))
        if self.objective == "wgan-gp" and norm == "batch":
            raise GenopsError(f"{self.name}: batch norm in a WGAN-GP critic breaks the per-sample gradient "
                              "penalty; use d_norm: none or layer")
        widths = list(cfg.get("widths", [32, 64, 128]))
        self.G = Generator(spec, list(cfg.get("g_widths", widths)), self.latent_dim, k)
        self.D = Discriminator(spec, list(cfg.get("d_widths", widths)), k, norm,
                               bool(cfg.get("spectral_norm", False)))

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.G, "discriminator": self.D}

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        betas = tuple(self.cfg.get("betas", (0.0, 0.9) if self.objective == "wgan-gp" else (0.5, 0.999)))
        lr_g, lr_d = float(self.cfg.get("lr_g", lr)), float(self.cfg.get("lr_d", lr))
        return {"g": torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=betas),
                "d": torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=betas)}

    def _noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    def d_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        """One discriminator/critic update; G's weights are not touched."""
        y = batch.y if self.conditional else None
        with torch.no_grad():
            fake = self.G(self._noise(batch.x.shape[0], ctx.generator), y)
        with ctx.autocast():
            real_score, fake_score = self.D(batch.x, y).float(), self.D(fake, y).float()
        loss = d_loss(self.objective, real_score, fake_score)
        gp = torch.zeros(())
        if self.objective == "wgan-gp":
            gp = gradient_penalty(self.D, batch.x, fake, y, ctx.generator)
            loss = loss + self.gp_weight * gp
        opt = ctx.optimizers["d"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = _grad_norm(self.D)
        opt.step()
        squash = (lambda s: s) if self.objective == "wgan-gp" else torch.sigmoid
        return {"loss_d": loss.item(), "d_real": squash(real_score).mean().item(),
                "d_fake": squash(fake_score).mean().item(), "grad_norm_d": grad, "gp": gp.item()}

    def g_step(self, n: int, ctx: StepContext, y: torch.Tensor | None) -> dict[str, float]:
        """One generator update through a frozen D; D's weights are not touched."""
        self.D.requires_grad_(False)
        try:
            with ctx.autocast():
                loss = g_loss(self.objective, self.D(self.G(self._noise(n, ctx.generator), y), y).float())
            opt = ctx.optimizers["g"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad = _grad_norm(self.G)
            opt.step()
        finally:
            self.D.requires_grad_(True)
        return {"loss_g": loss.item(), "grad_norm_g": grad}

    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        out = self.d_step(batch, ctx)
        if ctx.step % self.n_critic == self.n_critic - 1:
            self._last_g = self.g_step(batch.x.shape[0], ctx, batch.y if self.conditional else None)
        return {**out, **getattr(self, "_last_g", {"loss_g": 0.0, "grad_norm_g": 0.0})}

    def sampling_nets(self) -> dict[str, Net]:
        return {"sampler": GanSampler(self.G)}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
               nets: Mapping[str, Net] | None = None, **kwargs) -> torch.Tensor:
        nets = nets or self.sampling_nets()
        noise = self._noise(n, generator)
        labels = labels if labels is not None else self.default_labels(n)
        args = (noise,) if labels is None else (noise, labels.to(self.device))
        return nets["sampler"](*args).clamp(0, 1)

    def export_specs(self) -> list[ExportSpec]:
        noise = torch.randn(2, self.latent_dim)
        if self.conditional:
            return [ExportSpec("sampler", GanSampler(self.G), (noise, torch.zeros(2, dtype=torch.long)),
                               ["noise", "label"], ["image"])]
        return [ExportSpec("sampler", GanSampler(self.G), (noise,), ["noise"], ["image"])]

    @torch.no_grad()
    def interpolate(self, a: Batch, b: Batch, steps: int) -> torch.Tensor:
        """No encoder: spherical interpolation between seeded noise vectors (one row per pair)."""
        gen = torch.Generator().manual_seed(0)
        za, zb = self._noise(a.x.shape[0], gen), self._noise(a.x.shape[0], gen)
        omega = torch.acos((F.normalize(za, dim=1) * F.normalize(zb, dim=1)).sum(1).clamp(-1, 1))[:, None]
        y = a.y if self.conditional else None
        rows = []
        for t in torch.linspace(0, 1, steps):
            z = (torch.sin((1 - t) * omega) * za + torch.sin(t * omega) * zb) / torch.sin(omega).clamp_min(1e-6)
            rows.append(self.G(z, y))
        return torch.stack(rows, dim=1).flatten(0, 1)



"""What the adversarial families (gan, wgan-gp, stylegan, cyclegan) share: a generator side and one or more
discriminators, each side with its own Adam and learning rate (two time-scale updates, Heusel et al. 2017), the
mode-collapse watch during training, the losses, and the lazy R1 penalty's cadence (Mescheder et al. 2018;
Karras et al. 2020: every `every` steps, scaled up by as much).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from genops.config.families import AdversarialConfig, MonitorSettings
from genops.models.capabilities import Monitored, Phased
from genops.models.family import Family


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


def grad_norm(*modules: nn.Module) -> torch.Tensor | float:
    """The gradients' total 2-norm over the modules' parameters, left on the device (the training loop reads it at
    logging intervals)."""
    norms = [p.grad.norm() for m in modules for p in m.parameters() if p.grad is not None]
    return torch.stack(norms).norm().detach() if norms else 0.0


def r1_due(step: int, gamma: float, every: int) -> bool:
    """Whether the lazy R1 penalty runs at this step."""
    return gamma > 0 and step % every == 0


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 on real images (fp32: a gradient of a gradient)."""
    x = real.detach().requires_grad_(True)
    grad = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)[0]
    return grad.pow(2).flatten(1).sum(1).mean()


class Adversarial(Family, Phased, Monitored):
    """A generator side trained against discriminators: optimiser "g" over `generator_parameters`, one optimiser
    per entry of `discriminators` (its key), with the config's TTUR learning rates and betas."""

    cfg: AdversarialConfig

    @abstractmethod
    def generator_parameters(self) -> list[nn.Parameter]:
        """Every parameter the generator update trains (both generators of a CycleGAN)."""

    @abstractmethod
    def discriminators(self) -> dict[str, nn.Module]:
        """Optimiser name -> discriminator it updates."""

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        betas = tuple(self.cfg.betas)
        lr_g, lr_d = self.cfg.learning_rates(lr)
        return {"g": torch.optim.Adam(self.generator_parameters(), lr=lr_g, betas=betas),
                **{name: torch.optim.Adam(d.parameters(), lr=lr_d, betas=betas)
                   for name, d in self.discriminators().items()}}

    def monitor_settings(self) -> MonitorSettings | None:
        return self.cfg.monitor()

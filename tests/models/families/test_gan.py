"""GAN objectives and alternating updates."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from genops.config.families import WganGpConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch
from genops.models.families.adversarial import g_loss
from genops.models.families.gan import GAN, gradient_penalty
from genops.models.family import StepContext
from genops.models.registry import build_family

SPEC = DataSpec(12, 12, 1, 3)


def _gan(objective: str, **cfg) -> GAN:
    """WGAN-GP is its own registered family (WganGpConfig: its critic norm, n_critic and betas); the other
    objectives are the `gan` family's. lr_g / lr_d null: both optimisers use the lr given to make_optimizers."""
    torch.manual_seed(0)
    base = {"latent_dim": 8, "widths": [8, 16], "lr_g": None, "lr_d": None, **cfg}
    if objective == "wgan-gp":
        return build_family("wgan-gp", SPEC, base)
    return build_family("gan", SPEC, {"objective": objective, **base})


def _ctx(gan: GAN, step: int = 0) -> StepContext:
    return StepContext(step, 1, gan.make_optimizers(1e-3), contextlib.nullcontext, torch.Generator().manual_seed(1))


def _batch() -> Batch:
    return Batch(torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(2)), torch.arange(8) % 3)


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    """The weights (parameters); batch-norm running statistics legitimately move on any forward pass."""
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("objective", ["nonsaturating", "wgan-gp"])
def test_each_update_moves_only_its_own_network(objective):
    gan = _gan(objective, conditional=True)
    ctx = _ctx(gan)
    g0, d0 = _snapshot(gan.G), _snapshot(gan.D)
    gan.d_step(_batch(), ctx)
    assert _same(g0, _snapshot(gan.G)) and not _same(d0, _snapshot(gan.D))
    d1 = _snapshot(gan.D)
    gan.g_step(8, ctx, _batch().y)
    assert _same(d1, _snapshot(gan.D)) and not _same(g0, _snapshot(gan.G))


def test_gradient_penalty_of_unit_norm_linear_critic_is_zero():
    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = torch.randn(1 * 12 * 12)
            self.w = nn.Parameter(w / w.norm())

        def forward(self, x, y=None):
            return x.flatten(1) @ self.w

    real, fake = torch.rand(16, 1, 12, 12), torch.rand(16, 1, 12, 12)
    assert gradient_penalty(Linear(), real, fake, None).item() == pytest.approx(0.0, abs=1e-10)


def test_nonsaturating_loss_has_larger_generator_gradients_when_d_rejects_fakes():
    logits = torch.full((32,), -8.0)  # D is confident every fake is fake
    grads = {}
    for objective in ("minimax", "nonsaturating"):
        x = logits.clone().requires_grad_(True)
        g_loss(objective, x).backward()
        grads[objective] = x.grad.abs().mean().item()
    assert grads["nonsaturating"] > 100 * grads["minimax"]


@pytest.mark.parametrize("objective,sn", [("minimax", False), ("nonsaturating", True), ("wgan-gp", False)])
def test_short_run_of_each_objective_is_finite_and_samples_have_the_right_shape(objective, sn):
    gan = _gan(objective, spectral_norm=sn, n_critic=2)
    opts = gan.make_optimizers(2e-4)
    for step in range(6):
        losses = gan.train_step(_batch(), StepContext(step, 6, opts, contextlib.nullcontext, torch.Generator()))
        assert all(math.isfinite(v) for v in losses.values()), losses
    gan.train_mode(False)
    assert gan.sample(5, torch.Generator().manual_seed(0)).shape == (5, 1, 12, 12)


def test_wgan_gp_rejects_batch_norm_in_the_critic():
    from genops.errors import GenopsError

    with pytest.raises(ValidationError, match="gradient"):
        WganGpConfig(d_norm="batch")
    with pytest.raises(GenopsError, match="gradient"):
        _gan("wgan-gp", d_norm="batch")

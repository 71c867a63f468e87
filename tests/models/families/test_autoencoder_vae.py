"""Model maths: closed-form KL, reparameterisation gradients, the discrete likelihood, any image shape."""

from __future__ import annotations

import math

import pytest
import torch

from genops.config import FAMILIES
from genops.config.families import VAEConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch
from genops.models.capabilities import Interpolates, InterpolatesNoise
from genops.models.families.vae import VAE
from genops.models.likelihoods import discretized_logistic_log_prob, gaussian_kl, gaussian_log_prob
from genops.models.registry import build_family
from tests.models.extra_data import attach_synthetic_data


def _tiny(name: str) -> dict:
    """The family's declared test sizes (genops.config.families: each config class's `sizes`)."""
    return FAMILIES[name].config.sized("tiny")


def test_closed_form_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g) * 0.5
    z = mu + torch.exp(0.5 * logvar) * torch.randn(200_000, 4, 6, generator=g)
    zeros = torch.zeros_like(mu)
    mc = (gaussian_log_prob(z.flatten(0, 1), mu.repeat(200_000, 1), logvar.repeat(200_000, 1))
          - gaussian_log_prob(z.flatten(0, 1), zeros.repeat(200_000, 1), zeros.repeat(200_000, 1)))
    mc = mc.view(200_000, 4).mean(0)
    torch.testing.assert_close(gaussian_kl(mu, logvar), mc, atol=0.03, rtol=0.01)


def test_gradients_flow_through_reparameterisation():
    mu = torch.zeros(3, 5, requires_grad=True)
    logvar = torch.zeros(3, 5, requires_grad=True)
    z = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(1))
    (z ** 2).sum().backward()
    assert mu.grad is not None and mu.grad.abs().sum() > 0
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0


def test_discretized_logistic_is_a_distribution_over_256_values():
    values = torch.arange(256).float() / 255
    for mean, log_scale in [(0.3, -3.0), (0.0, -5.0), (0.99, -1.0), (0.5, -7.0)]:
        logp = discretized_logistic_log_prob(values, torch.full_like(values, mean), torch.full_like(values, log_scale))
        assert math.isclose(logp.exp().sum().item(), 1.0, rel_tol=1e-4), (mean, log_scale)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("spec", [DataSpec(28, 28, 1, 10), DataSpec(8, 8, 1, 0), DataSpec(20, 36, 3, 0)])
def test_every_family_trains_and_samples_any_shape(name, spec):
    torch.manual_seed(0)
    base_name = FAMILIES[name].base  # a stacked family (latent diffusion) is built on its base family's model
    base = build_family(base_name, spec, _tiny(base_name)) if base_name else None
    family = attach_synthetic_data(build_family(name, spec, _tiny(name), base=base))
    opts = family.make_optimizers(1e-3)
    import contextlib

    from genops.models.family import StepContext

    batch = Batch(torch.rand(4, *spec.shape), torch.zeros(4, dtype=torch.long))
    ctx = StepContext(0, 10, opts, contextlib.nullcontext, torch.Generator())
    losses = family.train_step(batch, ctx)
    assert all(math.isfinite(v) for v in losses.values())
    family.train_mode(False)
    x = family.sample(3, torch.Generator().manual_seed(0))
    assert x.shape == (3, *spec.shape) and x.min() >= 0 and x.max() <= 1
    if isinstance(family, Interpolates):
        assert family.interpolate(batch, batch, steps=5).shape == (20, *spec.shape)
    if isinstance(family, InterpolatesNoise):
        assert family.noise_interpolation(4, 5, batch.y).shape == (20, *spec.shape)


def test_conditional_vae_uses_labels_and_rejects_unlabeled_data():
    from genops.errors import GenopsError

    with pytest.raises(GenopsError, match="no labels"):
        VAE(VAEConfig(conditional=True), DataSpec(8, 8, 1, 0))
    vae = VAE(VAEConfig(conditional=True, latent_dim=4, widths=[8]), DataSpec(8, 8, 1, 3))
    vae.train_mode(False)
    noise_gen = torch.Generator().manual_seed(0)
    a = vae.sample(2, noise_gen, labels=torch.tensor([0, 0]))
    b = vae.sample(2, torch.Generator().manual_seed(0), labels=torch.tensor([2, 2]))
    assert not torch.allclose(a, b)  # same noise, other label -> other image


def test_autoencoder_latent_gaussian_is_fitted_to_training_latents():
    from genops.data.tensors import ImageSet

    spec = DataSpec(8, 8, 1, 0)
    ae = build_family("autoencoder", spec, {"latent_dim": 3, "widths": [8]})
    data = ImageSet(torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8), torch.full((64,), -1))
    ae.on_train_end(data, 16)
    z = ae.encoder(data.images.float() / 255)
    torch.testing.assert_close(ae.latent.mean, z.mean(0), atol=1e-4, rtol=1e-4)
    cov = ae.latent.chol @ ae.latent.chol.T
    torch.testing.assert_close(cov, torch.cov(z.T), atol=1e-4, rtol=1e-3)


def test_kl_warmup_ramps_the_kl_weight_from_zero_to_beta():
    """vae.kl_warmup = 0.5 of 10 steps: step s weighs the KL by beta x (s + 1) / 5, then beta."""
    import contextlib

    from genops.models.family import StepContext

    spec = DataSpec(8, 8, 1)
    batch = Batch(torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    for step, weight in ((0, 0.2), (3, 0.8), (7, 1.0)):
        torch.manual_seed(0)
        family = build_family("vae", spec, {"widths": [8], "beta": 1.0, "kl_warmup": 0.5})
        out = family.train_step(batch, StepContext(step, 10, family.make_optimizers(1e-3), contextlib.nullcontext,
                                                   torch.Generator().manual_seed(0)))
        assert float(out["loss"]) == pytest.approx(float(out["recon_nll"]) + weight * float(out["kl"]), rel=1e-5)


def test_vae_fitted_prior_is_the_aggregate_posterior_and_raises_the_elbo():
    """prior: fitted replaces N(0, I) by the aggregate posterior's moments after training; for a fixed encoder and
    decoder that Gaussian minimises the average KL, so the test ELBO can only rise (and samples decode from it)."""
    from genops.config.sections import EvaluateConfig
    from genops.data.tensors import ImageSet

    spec = DataSpec(8, 8, 1, 0)
    data = ImageSet(torch.randint(0, 256, (96, 1, 8, 8), dtype=torch.uint8), torch.full((96,), -1))
    cfg = EvaluateConfig(iw_samples=4, nll_subset=96, batch_size=32)
    elbo = {}
    for prior in ("standard", "fitted"):
        torch.manual_seed(0)
        vae = build_family("vae", spec, {"latent_dim": 3, "widths": [8], "prior": prior})
        with torch.no_grad():  # spread the posterior means away from N(0, I), as an under-trained encoder does
            vae.encoder.net.head.bias[:3] += torch.tensor([1.5, -1.0, 0.5])
        vae.on_train_end(data, 16)
        elbo[prior] = vae.evaluate(data, cfg, torch.Generator().manual_seed(0))["test_elbo_nats"]
        if prior == "standard":
            assert torch.equal(vae.prior.mean, torch.zeros(3)) and torch.equal(vae.prior.chol, torch.eye(3))
    mu, logvar = vae.encoder(data.images.float() / 255)
    torch.testing.assert_close(vae.prior.mean, mu.mean(0), atol=1e-4, rtol=1e-4)
    cov = vae.prior.chol @ vae.prior.chol.T
    torch.testing.assert_close(cov, torch.cov(mu.T) + torch.diag(logvar.exp().mean(0)), atol=1e-4, rtol=1e-3)
    assert elbo["fitted"] > elbo["standard"]
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    image = vae.sample(2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(image, vae.decoder(vae.prior.mean + noise @ vae.prior.chol.T)[0].clamp(0, 1))


def test_vae_latent_diagnostics_find_a_collapsed_dimension_and_traverse_the_active_ones():
    """Active units (Burda et al. 2016) and KL per dimension: a dimension whose posterior ignores x (mean 0, unit
    variance: the prior) is counted inactive with KL 0; rate + distortion is the negative ELBO against N(0, I)."""
    from genops.config.sections import EvaluateConfig
    from genops.data.tensors import ImageSet

    spec = DataSpec(8, 8, 1, 0)
    data = ImageSet(torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8), torch.full((64,), -1))
    torch.manual_seed(0)
    vae = build_family("vae", spec, {"latent_dim": 3, "widths": [8], "prior": "standard"})
    with torch.no_grad():  # dimension 2: q(z_2 | x) = N(0, 1) for every x -> collapsed
        head = vae.encoder.net.head
        head.weight[[2, 5]] = 0
        head.bias[[2, 5]] = 0
    m = vae.evaluate(data, EvaluateConfig(iw_samples=2, nll_subset=64, batch_size=32), torch.Generator().manual_seed(0))
    assert m["kl_dim_02"] == pytest.approx(0, abs=1e-9) and m["kl_dim_00"] > 0 and m["kl_dim_01"] > 0
    assert m["active_units"] <= 2 and m["latent_dim"] == 3
    assert m["test_rate_nats"] == pytest.approx(m["kl_dim_00"] + m["kl_dim_01"] + m["kl_dim_02"])
    assert -m["test_elbo_nats"] == pytest.approx(m["test_rate_nats"] + m["test_distortion_nats"], rel=1e-6)
    grid = vae.traverse(data.head(4).batch(torch.arange(4)), steps=5)
    assert grid.shape == (3 * 5, 1, 8, 8)  # one row per latent dimension (at most 8), 5 values along each


def test_free_bits_leave_dimensions_under_the_floor_unpenalised():
    """free_bits (Kingma et al. 2016): the KL term charges max(free_bits, KL_d) per dimension, so a dimension under
    the floor gets no gradient from the KL; the logged kl stays the true KL."""
    import contextlib

    from genops.models.family import StepContext

    spec = DataSpec(8, 8, 1, 0)
    batch = Batch(torch.rand(16, 1, 8, 8), None)
    losses = {}
    for free_bits in (0.0, 100.0):
        torch.manual_seed(0)
        vae = build_family("vae", spec, {"latent_dim": 3, "widths": [8], "free_bits": free_bits})
        ctx = StepContext(0, 10, vae.make_optimizers(0.0), contextlib.nullcontext, torch.Generator().manual_seed(0))
        losses[free_bits] = {k: float(v) for k, v in vae.train_step(batch, ctx).items()}
    assert losses[0.0]["kl"] == pytest.approx(losses[100.0]["kl"], rel=1e-5)  # same net, same noise
    # with a floor of 100 nats per dimension the KL term is the constant 300
    assert losses[100.0]["loss"] == pytest.approx(losses[100.0]["recon_nll"] + 300.0, rel=1e-5)

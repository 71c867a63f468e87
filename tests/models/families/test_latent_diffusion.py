"""Latent diffusion: standardised VAE latents, adopting a base VAE, budgets and options around it."""

from __future__ import annotations

import pytest
import torch

from genops.config import Params, validate
from genops.config.families import LatentDiffusionConfig, VAEConfig
from genops.data.spec import DataSpec
from genops.data.tensors import ImageSet
from genops.errors import GenopsError
from genops.models.families.vae import VAE
from genops.models.registry import build_family

SPEC = DataSpec(8, 8, 1, 0)
# The declared tiny sizes on a shorter chain (eval_steps must lie within it).
TINY = {**LatentDiffusionConfig.sized("tiny"), "timesteps": 10, "sample_steps": 3, "eval_steps": [3]}


def _base() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(latent_dim=3, widths=[8]), SPEC)


def test_the_base_vaes_params_and_weights_are_adopted_and_its_latents_standardised():
    base = _base()
    family = build_family("latent-diffusion", SPEC, TINY, base=base)
    assert family.base_cfg.latent_dim == 3 and family.x_shape == (3,)
    for name, net in base.networks().items():
        for (k, a), b in zip(net.state_dict().items(), family.vae.networks()[name].state_dict().values()):
            assert torch.equal(a, b), (name, k)
    images = ImageSet((torch.rand(64, *SPEC.shape) * 255).to(torch.uint8), torch.zeros(64, dtype=torch.long))
    family.on_train_start(images, 32)
    z = torch.cat([family.to_diffusion_space(b, torch.Generator().manual_seed(0)) for b in images.batches(64)])
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=0.35, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(3), atol=0.35, rtol=0)
    family.train_mode(True)
    assert not family.vae.encoder.training  # the base stays frozen in eval mode while the denoiser trains


def test_a_conditional_base_vae_is_refused():
    cvae = VAE(VAEConfig(latent_dim=3, widths=[8], conditional=True), DataSpec(8, 8, 1, 2))
    with pytest.raises(GenopsError, match="conditional"):
        build_family("latent-diffusion", DataSpec(8, 8, 1, 2), TINY, base=cvae)


def test_family_evaluation_budget_overrides_only_known_keys():
    raw = {"evaluate": {"n_samples": 1000, "batch_size": 256}, "pixelcnn": {"evaluate": {"n_samples": 64}}}
    params = Params.model_validate(raw)
    assert params.evaluation("pixelcnn") == params.evaluate.model_copy(update={"n_samples": 64})
    assert params.evaluation("pixelcnn").n_samples == 64 and params.evaluation("pixelcnn").batch_size == 256
    assert params.evaluation("vae") == params.evaluate
    with pytest.raises(GenopsError, match="pixelcnn.evaluate.n_sample: unknown key"):
        validate({**raw, "pixelcnn": {"evaluate": {"n_sample": 64}}}, "params.yaml")

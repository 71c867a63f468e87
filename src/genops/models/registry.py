"""The registry of families: a name -> the class implementing `genops.models.base.Family`.

Classes are imported lazily so `genops --help` and `genops families` stay fast.
"""

from __future__ import annotations

import importlib

from genops.data.spec import DataSpec
from genops.errors import GenopsError
from genops.models.base import Family

FAMILIES: dict[str, str] = {
    "autoencoder": "genops.models.autoencoder:Autoencoder",
    "vae": "genops.models.vae:VAE",
    "gan": "genops.models.gan:GAN",  # DCGAN, objective from params (default non-saturating)
    "wgan-gp": "genops.models.gan:GAN",  # the same networks trained with the WGAN-GP objective
    "diffusion": "genops.models.diffusion:Diffusion",  # DDPM + DDIM + classifier-free guidance
    "latent-diffusion": "genops.models.latent_diffusion:LatentDiffusion",  # DDPM in the registered VAE's latents
    "pixelcnn": "genops.models.pixelcnn:PixelCNN",  # gated PixelCNN, exact likelihood
    "vqvae": "genops.models.vqvae:VQVAE",  # VQ-VAE + PixelCNN prior over the code grid
}


def family_class(name: str) -> type[Family]:
    if name not in FAMILIES:
        raise GenopsError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def instantiate(name: str, cfg: dict, spec: DataSpec) -> Family:
    """Build family `name` from its config; the instance carries the registered name."""
    family = family_class(name).__new__(family_class(name))
    family.name = name  # set first so error messages from __init__ name the registered family
    family.__init__(cfg, spec)
    return family


def build_family(name: str, params: dict, spec: DataSpec) -> Family:
    """Build a family from its params.yaml section (`params[name]`)."""
    cfg = params.get(name)
    if cfg is None:
        raise GenopsError(f"params.yaml has no section '{name}' for family {name!r}")
    return instantiate(name, cfg, spec)

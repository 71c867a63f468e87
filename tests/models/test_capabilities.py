"""The model interface: a small core every family implements, capabilities a family opts into by inheriting them."""

from __future__ import annotations

import inspect

import pytest

from genops.config.families import FAMILIES
from genops.models.capabilities import CAPABILITIES, Capability, ExtraData, capabilities_of
from genops.models.family import Family
from genops.models.registry import family_class


def _methods(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if inspect.isfunction(v) and not n.startswith("_")}


def test_the_core_stays_small_and_holds_no_capability():
    core = {n for n, v in inspect.getmembers(Family) if inspect.isfunction(v) or isinstance(v, property)}
    core -= {n for n in core if n.startswith("_")}
    assert len(core) <= 16, sorted(core)
    for cap in CAPABILITIES:
        assert not _methods(cap) & core, (cap.__name__, _methods(cap) & core)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_that_implements_a_capability_declares_it(name):
    """A `complete` or `evaluate` written without inheriting Inpaints / OwnMetrics would be silently ignored by the
    stages (they ask isinstance): refuse it here."""
    cls = family_class(name)
    own = set().union(*(_methods(k) for k in cls.__mro__ if not issubclass(k, Capability) or issubclass(k, Family)))
    for cap in CAPABILITIES:
        if _methods(cap) & own:
            assert issubclass(cls, cap), f"{name} defines {sorted(_methods(cap) & own)} but is not {cap.__name__}"
    assert not inspect.isabstract(cls), f"{name} leaves {sorted(cls.__abstractmethods__)} unimplemented"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_whose_config_names_extra_data_takes_it(name):
    """The stages hand every source `data_sources()` names to `attach_data`: the config and the class must agree."""
    cfg = FAMILIES[name].config()
    assert bool(cfg.data_sources()) == issubclass(family_class(name), ExtraData), name


def test_what_each_family_can_do():
    """The table in docs (architecture): changing what a family can do is a decision, visible in this diff."""
    table = {name: capabilities_of(family_class(name)) for name in FAMILIES}
    assert table == {
        "autoencoder": ["FitsData", "Interpolates", "OwnMetrics"],
        "vae": ["FitsData", "Interpolates", "Traverses", "OwnMetrics"],
        "gan": ["Phased", "Monitored", "InterpolatesNoise"],
        "wgan-gp": ["Phased", "Monitored", "InterpolatesNoise"],
        "stylegan": ["Phased", "Monitored", "InterpolatesNoise", "SampleVariants", "OwnMetrics", "OwnFigures"],
        "diffusion": ["InterpolatesNoise", "Inpaints", "SampleVariants", "OwnMetrics"],
        "latent-diffusion": ["FitsData", "InterpolatesNoise", "SampleVariants", "OwnMetrics"],
        "diffusion-distilled": ["Phased", "InterpolatesNoise", "Inpaints", "SampleVariants", "OwnMetrics"],
        "pixelcnn": ["OwnMetrics"],
        "vqvae": ["Phased", "Interpolates", "OwnMetrics"],
        "cyclegan": ["ExtraData", "Phased", "Monitored", "Translates", "OwnMetrics", "OwnFigures"],
    }


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_sample_options_are_the_declared_ones_and_the_cli_takes_them(name):
    from genops.cli.commands import build_parser
    from genops.models.sample_options import SAMPLE_OPTION_TYPES

    options = family_class(name).sample_options
    assert set(options) <= set(SAMPLE_OPTION_TYPES), (name, options)
    args = build_parser().parse_args(["sample", name, *(f"--{o}={SAMPLE_OPTION_TYPES[o](1)}" for o in options)])
    assert all(getattr(args, o) is not None for o in options)

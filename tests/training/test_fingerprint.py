"""Fingerprints mean "this checkpoint": what changes training changes them, nothing else does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genops.config import FAMILIES, Params, apply_overrides, dump, validate
from genops.training.fingerprint import code_digest, training_fingerprint
from tests.conftest import PROJECT

ALL = sorted(FAMILIES)


@pytest.fixture(scope="module")
def src_copy(tmp_path_factory) -> Path:
    """A private copy of the genops sources to edit (fingerprints read the files, not imported modules)."""
    root = tmp_path_factory.mktemp("src")
    shutil.copytree(PROJECT / "src" / "genops", root / "genops", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _edit(root: Path, rel: str, old: str, new: str) -> str:
    path = root / "genops" / rel
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new, 1))
    return text


def _digests(root: Path) -> dict[str, str]:
    return {name: code_digest(name, root) for name in ALL}


def _changed_by(root: Path, rel: str, old: str, new: str) -> set[str]:
    before = _digests(root)
    original = _edit(root, rel, old, new)
    try:
        after = _digests(root)
    finally:
        (root / "genops" / rel).write_text(original)
    return {name for name in ALL if before[name] != after[name]}


def test_docstrings_model_cards_samplers_and_metrics_do_not_retrain(src_copy):
    assert _changed_by(src_copy, "models/families/diffusion.py", '"""Denoising diffusion probabilistic model',
                       '"""An edited docstring. Denoising diffusion probabilistic model') == set()
    assert _changed_by(src_copy, "models/families/diffusion.py", '"""L_simple: E_{t, eps}',
                       '"""Reworded. L_simple: E_{t, eps}') == set()
    assert _changed_by(src_copy, "models/families/diffusion.py", 'summary="DDPM (Ho et al. 2020)',
                       'summary="Model card text, edited: DDPM (Ho et al. 2020)') == set()
    assert _changed_by(src_copy, "models/diffusion/samplers.py", "    mean, var = gaussian_posterior(",
                       "    eta = eta * 1.0\n    mean, var = gaussian_posterior(") == set()
    assert _changed_by(src_copy, "models/families/vae.py", "        k = cfg.iw_samples",
                       "        k = max(1, cfg.iw_samples)") == set()  # evaluation code
    assert _changed_by(src_copy, "models/families/gan.py", "    def train_step(self, batch: Batch, ctx: StepContext)",
                       "    def train_step(self, batch: Batch, ctx: StepContext )") == set()  # formatting


def test_editing_a_network_retrains_exactly_the_families_that_build_it(src_copy):
    unet = _changed_by(src_copy, "models/networks/unet.py", "        h = self.conv_in(x_t)",
                       "        h = self.conv_in(x_t) * 1.0")
    assert unet == {"diffusion", "diffusion-distilled"}  # the student is the U-Net; latent diffusion's MLP is not
    assert _changed_by(src_copy, "models/networks/mlp.py", "        h = self.inp(x_t)",
                       "        h = self.inp(x_t) * 1.0") == {"latent-diffusion"}
    assert _changed_by(src_copy, "models/networks/conv.py", "        h = self.features(x).flatten(1)",
                       "        h = self.features(x).flatten(1) * 1.0") == {"autoencoder", "vae", "latent-diffusion"}
    assert _changed_by(src_copy, "models/networks/dcgan.py", "        h = self.body(x * 2 - 1)",
                       "        h = self.body(x * 2.0 - 1)") == {"gan", "wgan-gp", "stylegan"}  # StyleGAN's D
    assert _changed_by(src_copy, "models/networks/cyclegan.py", "        return x + self.body(x)",
                       "        return x + self.body(x) * 1.0") == {"cyclegan"}
    assert _changed_by(src_copy, "models/networks/pixelcnn.py", "        v = h\n",
                       "        v = h * 1.0\n") == {"pixelcnn", "vqvae"}
    assert _changed_by(src_copy, "training/loop.py", "    schedule = BatchSchedule(",
                       "    schedule = BatchSchedule(  # reworded\n") == set()  # a comment


def test_the_training_loop_is_part_of_every_family(src_copy):
    assert _changed_by(src_copy, "training/loop.py", "        if done % 10 == 0:",
                       "        if done % 11 == 0:") == set(ALL)


def test_config_fields_that_do_not_change_training_leave_the_fingerprint_alone():
    base = dump(Params())

    def fp(overrides: dict, family: str = "diffusion") -> str:
        p = validate(apply_overrides(base, overrides), "test")
        return training_fingerprint(family, p.family(family), p.train, p.seed, "data0")

    ref = fp({})
    for cosmetic in ({"train.progress": False}, {"train.log_every": 50}, {"train.checkpoint_every": 100},
                     {"diffusion.sample_steps": 20}, {"diffusion.eta": 0.5}, {"diffusion.eval_ddpm": False},
                     {"diffusion.evaluate.n_samples": 64}, {"evaluate.n_samples": 10}):
        assert fp(cosmetic) == ref, cosmetic
    for real in ({"diffusion.widths": [8, 16]}, {"train.steps": 10}, {"seed": 1}, {"diffusion.ema_decay": 0.99},
                 {"train.lr": 0.01}):
        assert fp(real) != ref, real


def test_what_a_capability_runs_in_training_retrains_its_family(src_copy):
    # CycleGAN's ExtraData capability: attach_data fills the bank that is saved with the weights and exported
    assert _changed_by(src_copy, "models/families/cyclegan.py", "manual_seed(0))\n        index = order[",
                       "manual_seed(1))\n        index = order[") == {"cyclegan"}
    # FitsData: the VAE's post-training prior fit (latent diffusion trains on the VAE, so it follows)
    assert "vae" in _changed_by(src_copy, "models/families/vae.py", '        if self.cfg.prior == "standard":',
                                '        if self.cfg.prior == "standard" and True:')
    # Phased: the VQ-VAE's phase boundaries decide which network each step trains
    assert _changed_by(src_copy, "models/families/vqvae.py", "    def flop_phases(self)",
                       "    def flop_phases(self, _unused=None)") == {"vqvae"}

"""The one typed configuration: params.yaml agrees with the schema, and bad values fail loudly and helpfully."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from genops.config import Params, apply_overrides, dump, load_params, smoke_params, validate
from genops.config.families import FAMILIES
from genops.config.loading import read_raw
from genops.config.template import render_template
from genops.data.spec import DataSpec
from genops.errors import GenopsError
from tests.conftest import PROJECT, env_for, run


def _dotted(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "smoke":
            out.update(_dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_params_yaml_holds_every_key_with_the_schema_default_and_a_comment():
    shipped = read_raw(PROJECT)
    defaults = dump(Params())
    assert _dotted(shipped) == _dotted(defaults)  # same keys, same values: one default per key
    lines = (PROJECT / "params.yaml").read_text().splitlines()
    section = None
    for i, line in enumerate(lines):
        key = re.match(r"^(\s*)([A-Za-z_][\w.-]*):", line)
        if not key:
            continue
        if not key.group(1):
            section = key.group(2)
        if section in ("smoke", "stacked", "profiles") and key.group(1):
            continue  # entries of a mapping (family -> base, dotted overrides), documented by its comment
        commented = "#" in line or lines[i - 1].strip().startswith("#")
        assert commented, f"params.yaml line {i + 1} has no comment: {line!r}"


def test_the_template_is_the_shipped_file_and_round_trips():
    assert yaml.safe_load(render_template()) == yaml.safe_load((PROJECT / "params.yaml").read_text())
    assert dump(validate(yaml.safe_load(render_template()), "template")) == dump(Params())


@pytest.mark.parametrize("raw,message", [
    ({"vae": {"latnet_dim": 8}}, "params.yaml: vae.latnet_dim: unknown key; did you mean latent_dim?"),
    ({"vea": {}}, "params.yaml: vea: unknown key; did you mean vae?"),
    ({"diffusion": {"evaluate": {"n_sample": 3}}}, "diffusion.evaluate.n_sample: unknown key; did you mean n_samples?"),
    ({"train": {"steps": "many"}}, "train.steps: Input should be a valid integer"),
    ({"train": {"batch_size": 0}}, "train.batch_size: Input should be greater than or equal to 1 (got 0)"),
    ({"data": {"channels": 2}}, "data.channels: Input should be 'auto', 1 or 3"),
    ({"diffusion": {"timesteps": 60}}, "diffusion: sample_steps / eval_steps must lie in 1..timesteps (60); got 100"),
    ({"vqvae": {"vq_fraction": 1.0}}, "vqvae.vq_fraction: Input should be less than 1"),
    ({"wgan-gp": {"d_norm": "batch"}}, "wgan-gp: d_norm: batch norm in a WGAN-GP critic"),
    ({"gan": {"monitor_every": 30}}, "gan.monitor_every (30) must be a multiple of train.log_every (25)"),
    ({"families": ["vae", "diffusoin"]}, "'diffusoin' is not a registered family"),
    ({"autoencoder": {"conditional": True}}, "autoencoder: conditional: the autoencoder baseline has no conditional"),
])
def test_bad_values_name_the_file_the_key_and_what_was_expected(raw, message):
    with pytest.raises(GenopsError) as err:
        validate(raw, "params.yaml")
    assert message in str(err.value)


def test_overrides_are_validated_and_named_as_such():
    params = load_params(PROJECT, ["train.steps=7", "diffusion.widths=[4, 8]", "vqvae.evaluate.n_samples=9"])
    assert params.train.steps == 7 and params.family("diffusion").widths == [4, 8]
    assert params.evaluation("vqvae").n_samples == 9 and params.evaluation("vae").n_samples == 1000
    with pytest.raises(GenopsError, match=r"--set: train.stpes: unknown key; did you mean steps\?"):
        load_params(PROJECT, ["train.stpes=7"])
    with pytest.raises(GenopsError, match="'train.steps' is a value"):
        load_params(PROJECT, ["train.steps.x=1"])


def test_the_smoke_section_applies_cleanly_and_a_bad_smoke_key_is_refused():
    smoke = smoke_params(load_params(PROJECT))
    assert smoke.train.steps == 40 and smoke.family("diffusion").timesteps == 100
    bad = apply_overrides(read_raw(PROJECT), {"smoke": {"vqvae.vq_steps": 20}})
    with pytest.raises(GenopsError, match=r"smoke: vqvae.vq_steps: unknown key"):
        from genops.config.loading import check_smoke

        check_smoke(validate(bad, "params.yaml"), "params.yaml")


def test_family_budgets_and_phase_split_go_through_the_config():
    params = Params()
    assert params.train.budget and params.train.steps is None and params.family("diffusion").steps is None
    assert params.family("vqvae").phase_split(2000) == 1000
    with pytest.raises(ValueError, match="leaves a phase with no steps"):
        params.family("vqvae").phase_split(1)
    assert params.evaluation("pixelcnn").n_samples == 200 and params.evaluation("pixelcnn").seed == 1234


def test_conditional_needs_labelled_data_where_the_data_is_known():
    from genops.models.registry import build_family

    with pytest.raises(GenopsError, match="vae.conditional=true but the dataset has no labels"):
        build_family("vae", DataSpec(8, 8, 1, 0), {"conditional": True, "widths": [8]})


def test_misspelt_key_in_params_yaml_stops_the_cli_before_any_stage(tmp_path):
    shutil.copy(PROJECT / "params.yaml", tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text().replace("  latent_dim: 16  # size of the Gaussian latent",
                                                          "  latnet_dim: 8")
    (tmp_path / "params.yaml").write_text(text)
    env = env_for(tmp_path, tmp_path)
    proc = run(["genops", "prepare"], tmp_path, env, check=False)
    assert proc.returncode == 2
    assert "params.yaml: vae.latnet_dim: unknown key; did you mean latent_dim?" in proc.stderr
    assert not (tmp_path / "data").exists()


def test_genops_params_prints_the_resolved_configuration(tmp_path):
    shutil.copy(PROJECT / "params.yaml", tmp_path / "params.yaml")
    env = env_for(tmp_path, tmp_path)
    out = run(["genops", "params", "--set", "train.steps=3"], tmp_path, env).stdout
    resolved = yaml.safe_load(out)
    assert resolved["train"]["steps"] == 3 and resolved["wgan-gp"]["n_critic"] == 1
    assert dump(validate(resolved, "printed")) == resolved


def test_a_profile_applies_as_overrides_the_users_set_wins_and_a_bad_one_is_named(tmp_path):
    from genops.cli.commands import with_profile
    from genops.config import load_params

    params = load_params(PROJECT, with_profile(PROJECT, "gpu", ["train.steps=7"]))
    assert params.diffusion.widths == [64, 128, 256] and params.train.channels_last and params.train.steps == 7
    with pytest.raises(GenopsError, match="--profile tpu: no such profile"):
        with_profile(PROJECT, "tpu", [])
    raw = read_raw(PROJECT)
    raw["profiles"] = {"big": {"train.stpes": 5}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(GenopsError, match=r"profile `big` does not apply cleanly(.|\n)*train.stpes: unknown key"):
        load_params(tmp_path)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_declares_its_sizes_and_they_validate(name):
    """Sizes live with the family: a registered config class without its own tiny, smoke and gpu sizes fails."""
    from genops.config.families import SIZE_PROFILES

    cls = FAMILIES[name].config
    assert "sizes" in vars(cls), f"{cls.__name__} declares no `sizes` of its own (tiny, smoke, gpu)"
    assert set(cls.sizes) == set(SIZE_PROFILES), (name, sorted(cls.sizes))
    for profile in SIZE_PROFILES:
        cls.model_validate(cls.sized(profile))  # every key exists and every value is valid


def test_profiles_and_test_sizes_come_from_the_families():
    from genops.config.families import profile_sizes
    from genops.config.params import GPU_PROFILE, SMOKE
    from tests.conftest import TINY

    for profile, table in (("smoke", SMOKE), ("gpu", GPU_PROFILE), ("tiny", TINY)):
        families = {k: v for k, v in table.items() if k.split(".")[0] in FAMILIES}
        assert families == profile_sizes(profile), profile


def test_a_renamed_key_names_its_new_name():
    with pytest.raises(GenopsError, match="'hidden' was renamed to 'width'"):
        validate(apply_overrides(read_raw(PROJECT), {"pixelcnn.hidden": 8}), "params.yaml")


def test_each_family_has_its_own_config_class_which_names_the_instance():
    """A built family's name comes from its config's class (gan and wgan-gp share a model class, not a config)."""
    from genops.config.families import registered_name
    from genops.models.registry import build_family

    classes = [entry.config for entry in FAMILIES.values()]
    assert len(set(classes)) == len(classes)
    assert all(registered_name(entry.config()) == name for name, entry in FAMILIES.items())
    spec = DataSpec(8, 8, 1, 3)
    assert build_family("wgan-gp", spec, {"widths": [8, 16], "latent_dim": 4}).name == "wgan-gp"
    assert build_family("gan", spec, {"widths": [8, 16], "latent_dim": 4}).name == "gan"

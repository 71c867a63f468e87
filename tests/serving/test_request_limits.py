"""The work a served request may ask for, counted in network passes, and the requirements a version carries."""

from __future__ import annotations

import pytest

from genops.data.spec import DataSpec
from genops.errors import GenopsError
from genops.models.registry import build_family
from genops.serving.environment import code_digest, copy_code, serving_requirements
from genops.serving.generator import RequestLimits

SPEC = DataSpec(28, 28, 1, 10)


def test_limits_come_from_the_model_config_and_the_serving_environment_overrides_them(monkeypatch):
    monkeypatch.delenv("GENOPS_SERVE_MAX_WORK", raising=False)
    monkeypatch.delenv("GENOPS_SERVE_MAX_IMAGES", raising=False)
    assert RequestLimits.from_model_config({"max_images": 8, "max_work": 100}) == RequestLimits(8, 100)
    monkeypatch.setenv("GENOPS_SERVE_MAX_WORK", "40")
    assert RequestLimits.from_model_config({"max_images": 8, "max_work": 100}) == RequestLimits(8, 40)
    monkeypatch.setenv("GENOPS_SERVE_MAX_WORK", "many")
    with pytest.raises(GenopsError, match="GENOPS_SERVE_MAX_WORK='many': expected a positive integer"):
        RequestLimits.from_model_config({"max_images": 8, "max_work": 100})
    monkeypatch.delenv("GENOPS_SERVE_MAX_WORK")
    with pytest.raises(GenopsError, match="holds no max_work"):
        RequestLimits.from_model_config({"max_images": 8})


def test_a_request_is_judged_as_a_whole():
    limits = RequestLimits(max_images=10, max_work=100)
    limits.check([(5, 10), (5, 10)])  # 10 images, 100 passes: exactly at both limits
    with pytest.raises(GenopsError, match="asks for 11 images; this endpoint serves at most 10"):
        limits.check([(5, 1), (6, 1)])
    with pytest.raises(GenopsError, match="costs 110 network passes"):
        limits.check([(5, 10), (3, 20)])  # each row alone fits; together they do not


def test_sampling_passes_count_the_network_evaluations_of_each_sampler():
    tiny = {"widths": [8, 16], "timesteps": 20, "sample_steps": 4, "eval_steps": [2]}
    diffusion = build_family("diffusion", SPEC, tiny)
    assert diffusion.sampling_passes() == 4 and diffusion.sampling_passes(steps=10) == 10
    assert diffusion.sampling_passes(steps=10_000) == 20  # the chain never has more steps than T
    guided = build_family("diffusion", SPEC, {**tiny, "conditional": True, "guidance": 3.0})
    assert guided.sampling_passes() == 8 and guided.sampling_passes(guidance=1.0) == 4
    assert build_family("pixelcnn", SPEC, {"width": 8, "depth": 2}).sampling_passes() == 28 * 28
    assert build_family("gan", SPEC, {"widths": [8, 16]}).sampling_passes() == 1


def test_requirements_install_from_the_public_index_and_the_code_copy_is_clean(tmp_path):
    cpu, cuda = serving_requirements("cpu"), serving_requirements("cuda")
    assert all("+" not in r for r in cpu + cuda)
    assert cpu[0].startswith("mlflow-skinny==") and cpu[1].startswith("onnxruntime==")
    assert cuda[1].startswith("onnxruntime-gpu[cuda,cudnn]==") and cpu[2:] == cuda[2:]
    assert any(r.startswith("torch==") for r in cpu)
    with pytest.raises(GenopsError, match="serving.requirements='tpu'"):
        serving_requirements("tpu")
    code = copy_code(tmp_path)
    assert (code / "serving" / "generator.py").is_file() and not list(code.rglob("__pycache__"))
    assert code_digest(code) == code_digest(copy_code(tmp_path / "again"))

"""Data-parallel training through real torchrun (gloo, 2 CPU processes) trains the model one process does.

Tolerance: every exported graph's output on fixed inputs within 1e-5 of the single-process model (measured:
at most 2.3e-6), and every weight within 1e-5 except biases directly ahead of a normalisation layer. Those
have a true gradient of (nearly) zero, so their gradient is float rounding noise, which differs between one
sum over 16 images and the mean of two sums over 8; Adam divides by the gradient's own scale and turns that
noise into lr-sized steps (measured: up to 5.6e-3 = about lr x steps), which the normalisation then cancels.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genops.config import apply_overrides, validate
from genops.config.sections import DistributedConfig
from genops.errors import GenopsError
from genops.models.registry import build_family
from genops.training.distributed import torchrun_command
from tests.conftest import PROJECT, env_for, make_project, run
from tests.training.ddp_cases import CASES, SPEC, trained

OUTPUT_ATOL = 1e-5
WEIGHT_ATOL = 1e-5


@pytest.fixture(scope="module")
def two_process_weights(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "tests.training.ddp_cases", str(out)], cwd=PROJECT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _outputs(name: str, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    family = build_family(name, SPEC, CASES[name])
    family.load_state_dict(weights)
    family.train_mode(False)
    torch.manual_seed(1)  # the example inputs are drawn from the global generator
    outs = {}
    with torch.no_grad():
        for spec in family.export_specs():
            out = spec.module(*spec.example_inputs)
            outs[spec.name] = out[0] if isinstance(out, tuple) else out
    return outs


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_train_the_weights_of_one(name, two_process_weights, tmp_path):
    torch.set_num_threads(1)
    one = trained(name, work=tmp_path)
    two = load_file(str(two_process_weights / f"{name}.safetensors"))
    assert one.keys() == two.keys()
    initial = build_family(name, SPEC, CASES[name]).state_dict()
    assert any(not torch.equal(one[k], initial[k]) for k in one), "training changed nothing"

    for graph, (a, b) in {k: (v, _outputs(name, two)[k]) for k, v in _outputs(name, one).items()}.items():
        assert torch.allclose(a.float(), b.float(), atol=OUTPUT_ATOL, rtol=0), \
            f"{name}.{graph}: max |diff| {(a.float() - b.float()).abs().max():.3g}"
    for k in one:
        if not one[k].is_floating_point():
            assert torch.equal(one[k], two[k]), k  # counters: batch-norm batches, VQ code usage
            continue
        diff = (one[k] - two[k]).abs().max().item()
        assert diff <= WEIGHT_ATOL or k.endswith(".bias"), f"{name}: {k} differs by {diff:.3g}"


def test_batch_must_split_evenly_and_several_machines_need_a_rendezvous(tiny_params):
    from genops.config.loading import dump

    raw = dump(tiny_params)
    with pytest.raises(GenopsError, match="batch_size 30 must be a multiple of the 4 training processes"):
        validate(apply_overrides(raw, {"train.batch_size": 30, "train.distributed.nproc": 4}), "--set")
    with pytest.raises(GenopsError, match="nnodes=2 needs rdzv_endpoint"):
        validate(apply_overrides(raw, {"train.distributed.nnodes": 2}), "--set")


def test_torchrun_command_is_standalone_on_one_machine_and_c10d_on_several():
    one = torchrun_command(DistributedConfig(nproc=2), ["train", "vae"])
    assert one[1:5] == ["-m", "torch.distributed.run", "--nproc-per-node", "2"] and "--standalone" in one
    assert one[-4:] == ["-m", "genops.cli", "train", "vae"]
    many = torchrun_command(DistributedConfig(nproc=4, nnodes=2, rdzv_endpoint="10.0.0.1:29400"), ["train", "gan"])
    assert "--standalone" not in many
    assert many[many.index("--rdzv-endpoint") + 1] == "10.0.0.1:29400" and many[many.index("--nnodes") + 1] == "2"


@pytest.mark.integration
def test_killed_two_process_train_stage_resumes_and_matches_one_process(tmp_path):
    """`genops train` with nproc 2 relaunches itself under torchrun; killed (-9, the whole process group) after its
    first checkpoint, a rerun resumes from it and ends with the model a single process trains."""
    settings = {"train.steps": 300, "train.checkpoint_every": 10, "train.batch_size": 16, "families": ["autoencoder"],
                "train.distributed.nproc": 2}
    root = make_project(tmp_path / "two", settings)
    env = {**env_for(root, tmp_path), "OMP_NUM_THREADS": "1"}
    for stage in ("prepare", "validate"):
        run(["genops", stage], root, env)
    reference = tmp_path / "one"
    subprocess.run(["cp", "-a", str(root), str(reference)], check=True)

    state = root / ".genops" / "work" / "autoencoder" / "ckpt-state.pt"
    proc = subprocess.Popen(["genops", "train", "autoencoder"], cwd=root, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (root / "checkpoints" / "autoencoder" / "train.json").exists(), "training finished before the kill"

    out = run(["genops", "train", "autoencoder"], root, env)
    info = json.loads((root / "checkpoints" / "autoencoder" / "train.json").read_text())
    assert info["processes"] == 2 and 0 < info["resumed_from"] < 300, out.stdout
    assert json.loads(out.stdout)["resumed_from"] == info["resumed_from"]

    ref_env = {**env_for(reference, tmp_path / "ref"), "OMP_NUM_THREADS": "1"}
    (tmp_path / "ref").mkdir()
    run(["genops", "train", "autoencoder", "--set", "train.distributed.nproc=1"], reference, ref_env)
    two = load_file(str(root / "checkpoints" / "autoencoder" / "weights.safetensors"))
    one = load_file(str(reference / "checkpoints" / "autoencoder" / "weights.safetensors"))
    for k in one:
        diff = (one[k].float() - two[k].float()).abs().max().item()
        assert diff <= 1e-3 or k.endswith(".bias"), f"{k} differs by {diff:.3g}"

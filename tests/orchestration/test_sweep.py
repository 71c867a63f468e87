"""The beta-VAE sweep runs the real train and evaluate stages once per beta (via `dvc repro sweep@0`) and draws
the rate-distortion curve: a larger beta buys a smaller KL (rate) with a larger distortion."""

from __future__ import annotations

import json

from tests.conftest import env_for, make_project, run


def test_beta_sweep_trades_rate_for_distortion_and_leaves_the_project_alone(tmp_path):
    sweep = {"family": "vae", "param": "beta", "values": [0.5, 4.0], "budget_fraction": 1.0}
    root = make_project(tmp_path / "proj", {"families": ["vae"], "sweeps": [sweep], "train.steps": 30,
                                            "vae.latent_dim": 4})
    env = env_for(root, tmp_path)
    run(["dvc", "repro", "sweep@0"], root, env)
    out = root / "reports" / "sweeps" / "vae-beta"
    result = json.loads((out / "sweep.json").read_text())
    low, high = result["rows"]
    assert (low["value"], high["value"]) == (0.5, 4.0)
    assert high["test_rate_nats"] < low["test_rate_nats"]  # beta weighs the KL: more beta, less rate
    assert high["test_distortion_nats"] > low["test_distortion_nats"]  # ... paid for in reconstruction
    for r in (low, high):
        assert 0 <= r["active_units"] <= r["latent_dim"] == 4 and r["fid"] > 0
    assert (out / "rate_distortion.png").stat().st_size > 0 and "| 4 | " in (out / "sweep.md").read_text()
    # The sweep trained in its own workspaces: the project's own vae was never trained, nothing registered.
    assert not (root / "checkpoints" / "vae").exists() and not (root / "reports" / "registry").exists()
    assert "up to date" in run(["dvc", "status", "sweep@0"], root, env).stdout


def test_a_sweep_stage_is_shared_not_a_family_the_flow_would_filter_out():
    from genops.orchestration.dvc_graph import stage_family

    assert stage_family("sweep@0") is None and stage_family("prepare") is None
    assert stage_family("train@vae") == "vae"
    assert stage_family("register-stacked@latent-diffusion") == "latent-diffusion"

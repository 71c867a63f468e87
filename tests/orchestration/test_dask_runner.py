"""Stages fan out over a Dask LocalCluster (prefect-dask), each waiting only for its own upstream stages."""

from __future__ import annotations

import json

import pytest

from tests.conftest import env_for, make_project, run

pytestmark = pytest.mark.integration


def test_dask_runner_runs_the_graph_per_stage_and_leaves_dvc_clean(tmp_path):
    root = make_project(tmp_path / "proj", {"families": ["autoencoder", "vae"], "stacked": {},
                                            "orchestration.runner": "dask", "orchestration.dask.n_workers": 2})
    env = env_for(root, tmp_path)
    summary = json.loads(run(["genops", "pipeline"], root, env).stdout)
    assert not summary["failed"]
    ran = [r["stage"] for r in summary["stages"] if r["status"] == "ran"]
    assert {"prepare", "validate", "train@autoencoder", "train@vae", "register@vae", "compare"} <= set(ran)
    assert "up to date" in run(["dvc", "status"], root, env).stdout
    # A second run finds nothing to do.
    again = json.loads(run(["genops", "pipeline"], root, env).stdout)
    assert {r["status"] for r in again["stages"]} == {"skipped (unchanged)"}

    # A family that fails stops only its own downstream stages; the other family's stages still run.
    proc = run(["genops", "pipeline", "--set", "vae.beta=1e12", "--set", "autoencoder.latent_dim=8"], root, env,
               check=False)
    assert proc.returncode != 0 and "train@vae" in proc.stderr and "diverged" in proc.stderr
    status = json.loads((root / "reports" / "pipeline_run.json").read_text())
    by_stage = {r["stage"]: r["status"] for r in status["stages"]}
    assert by_stage["train@vae"] == "failed" and by_stage["evaluate@vae"].startswith("not run")
    assert by_stage["register@autoencoder"] == "ran"
    assert by_stage["compare"] == "ran", proc.stderr[-3000:]  # the comparison goes on with the families that succeeded

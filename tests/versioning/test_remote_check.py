"""A DVC remote the run could not push to at its end is refused when the flow starts, before any training."""

from __future__ import annotations

import os

import pytest

from genops.errors import GenopsError
from genops.versioning.dvc import check_remote
from tests.conftest import env_for, make_project, run


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "proj")


def test_a_remote_whose_plugin_is_missing_is_refused_with_the_fix(project, monkeypatch):
    env = env_for(project, project)
    run(["dvc", "remote", "add", "-d", "team", "gs://bucket/genops"], project, env)  # dvc-gs is not installed
    with pytest.raises(GenopsError, match=r"needs the dvc-gs plugin, which is not installed: `pip install dvc-gs`"):
        check_remote(project)
    # through the pipeline: it stops before the first stage, so nothing is trained
    proc = run(["genops", "pipeline", "--families", "autoencoder"], project, env, check=False)
    assert proc.returncode != 0 and "needs the dvc-gs plugin" in proc.stderr
    assert not (project / "checkpoints").exists() and not (project / "data" / "prepared").exists()


def test_an_s3_remote_without_credentials_is_refused(project, monkeypatch, tmp_path):
    env = env_for(project, project)
    run(["dvc", "remote", "add", "-d", "team", "s3://bucket/genops"], project, env)
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(GenopsError, match="has no S3 credentials: set AWS_ACCESS_KEY_ID"):
        check_remote(project)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    check_remote(project)  # plugin installed (the stack extra), credentials present

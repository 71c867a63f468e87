"""Versioned end to end: a recorded run is a git commit that pins every output; a version restores from it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import env_for, make_project, run

pytestmark = pytest.mark.integration


def _client(tmp):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_recorded_runs_restore_diff_refuse_dirty_and_dvc_experiments(tmp_path):
    root = make_project(tmp_path / "proj", {"families": ["vae"], "stacked": {}})
    env = env_for(root, tmp_path)
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "--local", "-d", "shared", str(remote)], root, env)  # a local-directory remote
    first = json.loads(run(["genops", "pipeline", "--set", "versioning.commit=true"], root, env).stdout)
    head = run(["git", "rev-parse", "HEAD"], root, env).stdout.strip()
    assert first["recorded"]["commit"] == head
    files = run(["git", "show", "--name-only", "--format=%B", "HEAD"], root, env).stdout
    assert "dvc.lock" in files and "params.yaml" in files and "genops-vae v1 @champion" in files
    lock = (root / "dvc.lock").read_text()
    v1 = _client(tmp_path).get_model_version("genops-vae", "1")
    assert v1.tags["genops.lineage.commit"] == head and v1.tags["genops.dvc.checkpoint"] in lock
    assert v1.tags["genops.dvc.exported"] in lock
    assert any(p.is_file() for p in remote.rglob("*")), "the flow pushed to the remote"

    # A version restores into another folder: its commit, its checkpoint (hash verified), its stages clean.
    restored = json.loads(run(["genops", "restore", "models:/genops-vae/1", "--to", str(tmp_path / "r")],
                              root, env).stdout)
    assert restored["commit"] == head and restored["checkpoint_md5"] == v1.tags["genops.dvc.checkpoint"]
    print(json.dumps(restored, indent=2))
    weights = "checkpoints/vae/weights.safetensors"
    assert (tmp_path / "r" / weights).read_bytes() == (root / weights).read_bytes()
    assert restored["stages"] == ["evaluate@vae", "export@vae", "train@vae"]
    assert "up to date" in run(["dvc", "status", "--with-deps", *restored["stages"]], tmp_path / "r", env).stdout

    # A second recorded run with another beta: `dvc metrics diff` between the two commits shows the VAE moving.
    run(["genops", "pipeline", "--set", "versioning.commit=true", "--set", "vae.beta=4.0"], root, env)
    diff = json.loads(run(["dvc", "metrics", "diff", head, "HEAD", "--json"], root, env).stdout)
    changed = diff["metrics/vae.json"]
    print(run(["dvc", "metrics", "diff", head, "HEAD"], root, env).stdout)  # shown in the session note
    assert changed["test_nll_bpd"]["diff"] != 0 and "fid" in changed
    assert _client(tmp_path).get_model_version("genops-vae", "2").tags["genops.lineage.commit"] != head
    plots = run(["dvc", "plots", "diff", head, "HEAD", "--json", "--split"], root, env).stdout
    assert "reports/vae/train/losses.csv" in plots  # the loss curves of both runs, overlaid

    # A dirty tree is refused before any work, and nothing is recorded.
    (root / "src" / "genops" / "errors.py").write_text((root / "src" / "genops" / "errors.py").read_text() + "\n#\n")
    before = run(["git", "rev-parse", "HEAD"], root, env).stdout
    proc = run(["genops", "pipeline", "--set", "versioning.commit=true", "--set", "vae.beta=2.0"], root, env,
               check=False)
    assert proc.returncode != 0 and "uncommitted changes to tracked files (src/genops/errors.py)" in proc.stderr
    assert run(["git", "rev-parse", "HEAD"], root, env).stdout == before
    run(["git", "checkout", "--", "src/genops/errors.py", "params.yaml"], root, env)

    # A version registered without recording cannot be restored, and says why.
    bad = run(["genops", "restore", "models:/genops-vae/9", "--to", str(tmp_path / "x")], root, env, check=False)
    assert bad.returncode != 0 and "cannot resolve models:/genops-vae/9" in bad.stderr

    # `dvc exp run -S` runs the same stage commands; the MLflow runs it makes carry the experiment's name.
    out = run(["dvc", "exp", "run", "-S", "vae.beta=2.0", "-n", "beta2"], root, env).stdout
    assert "beta2" in out
    runs = _client(tmp_path).search_runs(["1"], filter_string="tags.`genops.dvc.exp_name` = 'beta2'")
    assert {r.data.tags["mlflow.runName"] for r in runs} >= {"vae"}
    shown = run(["dvc", "exp", "show", "--json"], root, env).stdout
    assert "beta2" in shown and "test_nll_bpd" in shown

"""A team retrains one family at a time: the commit's dvc.lock also records other families' outputs whose objects
were never pushed. The run says what the remote lacks; restore pulls only what the version needs, and a version
whose own objects are missing from the remote is refused naming them (issue 30)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import PROJECT, env_for, make_project, run

pytestmark = pytest.mark.integration


def test_a_subset_run_restores_while_other_families_objects_are_nowhere(tmp_path):
    root = make_project(tmp_path / "proj", {"stacked": {}})  # families: autoencoder, vae (TINY)
    env = env_for(root, tmp_path)
    shutil.copy(PROJECT / "dvc.lock", root / "dvc.lock")  # main's lock: outputs of runs made elsewhere
    run(["git", "add", "dvc.lock"], root, env)
    run(["git", "commit", "-qm", "the lock main carries"], root, env)
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "--local", "-d", "shared", str(remote)], root, env)

    summary = json.loads(run(["genops", "pipeline", "--families", "vae", "--set", "versioning.commit=true"],
                             root, env).stdout)
    print("not pushed:", summary["not_pushed"])
    assert "checkpoints/autoencoder" in summary["not_pushed"] and not any("vae" in p for p in summary["not_pushed"])

    restored = json.loads(run(["genops", "restore", "models:/genops-vae@champion", "--to", str(tmp_path / "r")],
                              root, env).stdout)
    print(json.dumps(restored, indent=2))
    assert restored["stages"] == ["evaluate@vae", "export@vae", "train@vae"]
    weights = "checkpoints/vae/weights.safetensors"
    assert (tmp_path / "r" / weights).read_bytes() == (root / weights).read_bytes()
    assert (tmp_path / "r" / "exported" / "vae").is_dir() and (tmp_path / "r" / "data" / "prepared").is_dir()
    assert not (tmp_path / "r" / "checkpoints" / "autoencoder").exists()
    sampled = run(["genops", "sample", "vae", "--backend", "torch", "--n", "4", "--out", str(tmp_path / "s.npz")],
                  tmp_path / "r", env_for(tmp_path / "r", tmp_path))
    assert json.loads(sampled.stdout)["n"] == 4

    # The remote loses the version's checkpoint: restore refuses before pulling, naming what is missing.
    lock = (root / "dvc.lock").read_text()
    digest = restored["checkpoint_md5"].removesuffix(".dir")
    manifest = next(p for p in remote.rglob(f"{digest[2:]}.dir") if p.parent.name == digest[:2])
    manifest.unlink()
    assert restored["checkpoint_md5"] in lock
    bad = run(["genops", "restore", "models:/genops-vae@champion", "--to", str(tmp_path / "r2")], root, env,
              check=False)
    print(bad.stderr)
    assert bad.returncode != 0 and "lacks" in bad.stderr and "checkpoints/vae" in bad.stderr, bad.stderr

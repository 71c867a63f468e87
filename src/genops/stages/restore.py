"""restore: a registered version back as a working project: its commit checked out, its outputs pulled.

`genops restore models:/genops-vae@champion --to DIR` clones the repository at the version's lineage commit
(`genops.lineage.commit`, set when the run was recorded), pulls what the version needs from the remote (the
outputs of its family's train, evaluate and export stages and of everything upstream of them: prepared data,
evaluator, a stacked family's base; not the other families' outputs, which that commit's dvc.lock may record from
runs never pushed), checks that the checkpoint's hash is the one recorded on the version, and that `dvc status` of
those stages is clean, so the model can be sampled, re-evaluated, re-exported or retrained exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from genops.errors import GenopsError
from genops.tracking.model_registry import model_version
from genops.tracking.store import setup_mlflow
from genops.versioning.dvc import (
    dvc,
    forget_transfer_index,
    not_in_remote,
    out_hashes,
    remote_configured,
    status,
    version_stages,
)


def restore_stage(model_uri: str, dest: Path, root: Path, repo: str | None = None) -> dict:
    setup_mlflow(root)
    try:
        mv = model_version(model_uri)
    except Exception as exc:  # mlflow raises several types for a missing name/alias/version
        raise GenopsError(f"cannot resolve {model_uri}: {exc}") from exc
    commit, family, expected = _lineage(mv)
    source, dest = repo or str(root), Path(dest).resolve()
    _checkout(source, dest, commit, f"{mv.name} v{mv.version}")
    _connect_remote(Path(source), dest)
    recorded = out_hashes(dest).get(f"checkpoints/{family}")
    if recorded != expected:
        raise GenopsError(f"dvc.lock at {commit[:12]} records checkpoints/{family} as {recorded}, but the version "
                          f"says {expected}: the version does not belong to this commit")
    stages = version_stages(dest, family)
    _pull_clean(dest, commit, stages)
    return {"model": mv.name, "version": int(mv.version), "family": family, "commit": commit, "dir": str(dest),
            "checkpoint": str(dest / "checkpoints" / family), "checkpoint_md5": recorded, "stages": stages,
            "dvc_status": "clean"}


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _lineage(mv) -> tuple[str, str, str]:
    """The version's recorded commit, family and checkpoint hash; refused when the run recorded none."""
    tags = mv.tags
    commit, family = tags.get("genops.lineage.commit"), tags.get("genops.family")
    expected = tags.get("genops.dvc.checkpoint")
    if not commit or not expected or not family:
        raise GenopsError(f"{mv.name} v{mv.version} has no recorded lineage (genops.lineage.commit / "
                          f"genops.dvc.checkpoint / genops.family): it was registered by a run with "
                          f"versioning.commit off, so there is no commit that pins its outputs")
    return commit, family, expected


def _checkout(source: str, dest: Path, commit: str, version: str) -> None:
    """A clone of `source` in the empty (or new) folder `dest`, at `commit`."""
    if dest.exists() and any(dest.iterdir()):
        raise GenopsError(f"--to {dest}: the folder exists and is not empty")
    proc = _run(["git", "clone", "-q", "--no-checkout", source, str(dest)], dest.parent)
    if proc.returncode != 0:
        raise GenopsError(f"git clone {source} failed: {proc.stderr.strip()}")
    proc = _run(["git", "checkout", "-q", "--detach", commit], dest)
    if proc.returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        raise GenopsError(f"commit {commit} (lineage of {version}) not found in {source}: {proc.stderr.strip()}")


def _connect_remote(source: Path, dest: Path) -> None:
    """The DVC remote the source project pushes to (its untracked config.local), or a clear refusal."""
    local_config = source / ".dvc" / "config.local"
    if not remote_configured(dest) and local_config.is_file():
        shutil.copy(local_config, dest / ".dvc" / "config.local")
    if not remote_configured(dest):
        raise GenopsError(f"no DVC remote configured for {source} (dvc remote add -d ..., or `genops stack "
                          "connect`): the outputs of the recorded run cannot be pulled")


def _pull_clean(dest: Path, commit: str, stages: list[str]) -> None:
    """`dvc pull --with-deps` of the version's stages, refused first (naming them) when the remote lacks some of
    their outputs; then `dvc status` of those stages must be clean."""
    if not stages:
        raise GenopsError(f"dvc.lock at {commit[:12]} records none of the version's stages")
    lacking = not_in_remote(dest, *stages)
    if lacking:
        raise GenopsError(f"the DVC remote lacks {len(lacking)} outputs the version needs at {commit[:12]} (never "
                          f"pushed from the run that made them): {', '.join(lacking)}")
    try:
        forget_transfer_index(dest)
        dvc(dest, "pull", "--with-deps", *stages)
    except GenopsError as exc:
        raise GenopsError(f"dvc pull at {commit[:12]} failed: {exc}") from None
    changed = status(dest, "--with-deps", *stages)
    if changed:
        raise GenopsError(f"after dvc pull, {dest} differs from its dvc.lock: {json.dumps(changed, indent=1)}")

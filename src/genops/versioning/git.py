"""Recording a run in git: dvc.lock and params.yaml committed on the current branch after a successful flow.

dvc.lock holds the hashes of every DVC output (data, checkpoints, exported graphs, metrics, reports), so the
commit pins exactly what the run produced; the objects themselves go to the DVC cache and remote. A recorded
run must be reproducible from its commit, so a working tree with other uncommitted changes is refused.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from genops.errors import GenopsError

RECORDED = ("dvc.lock", "params.yaml")  # what a run writes and the record commits; anything else must be clean


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GenopsError(f"`git {' '.join(args)}` failed in {root}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def check_recordable(root: Path) -> None:
    """Refuse early (before any training) when the run could not be recorded faithfully."""
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=root, capture_output=True).returncode != 0:
        raise GenopsError(f"versioning.commit is on but {root} is not a git repository")
    dirty = [line[3:] for line in _git(root, "status", "--porcelain", "--untracked-files=no").splitlines()
             if line[3:].strip() not in RECORDED]
    if dirty:
        raise GenopsError("versioning.commit: the working tree has uncommitted changes to tracked files ("
                          + ", ".join(dirty[:5]) + (", ..." if len(dirty) > 5 else "")
                          + "); commit or stash them first, so the recorded commit holds the code that ran")


def commit_run(root: Path, message: str) -> str:
    """Commit dvc.lock and params.yaml (and the .gitignore entries DVC may add); returns the commit sha."""
    check_recordable(root)
    paths = [p for p in RECORDED if (root / p).exists()]
    _git(root, "add", "--", *paths)
    if _git(root, "diff", "--cached", "--name-only").strip():
        _git(root, "commit", "-q", "-m", message)
    return _git(root, "rev-parse", "HEAD").strip()

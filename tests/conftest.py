"""Shared fixtures: a throw-away copy of the project as its own git + DVC repo, and tiny params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genops.config.families import profile_sizes

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Sizes that keep every stage to seconds on 2 CPU cores while running the real code paths.
TINY = {
    "data.limit": 300,
    "train.steps": 12,
    "train.snapshots": [0.5],
    "evaluate.curve_samples": 16,
    "evaluate.inpaint_samples": 16,
    "train.batch_size": 32,
    "train.checkpoint_every": 6,
    "train.log_every": 6,
    "train.progress": False,
    "evaluate.speed_samples": 32,
    "evaluate.iw_samples": 2,
    "evaluate.nll_subset": 32,
    "evaluate.grid_size": 16,
    "evaluate.n_samples": 48,
    "evaluate.n_reference": 64,
    "evaluate.kid_subsets": 5,
    "evaluate.kid_subset_size": 24,
    "evaluator.steps": 20,
    "evaluator.width": 8,
    "validation.min_rows": 50,
    "validation.min_per_class": 2,
    "families": ["autoencoder", "vae"],
    "stacked": {},
    "sweeps": [],  # tests/orchestration/test_sweep.py runs one
    **profile_sizes("tiny"),  # each family's test sizes, declared with its config class
}


def env_for(root: Path, tmp: Path) -> dict[str, str]:
    """Environment for a subprocess run of genops/dvc: temp MLflow store and Prefect home."""
    env = dict(os.environ)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    })
    env.pop("GENOPS_ROOT", None)
    env.pop("DVC_ROOT", None)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\n"
                             f"STDERR:\n{proc.stderr[-5000:]}")
    return proc


def write_params(root: Path, overrides: dict) -> dict:
    from genops.config import apply_overrides

    params = apply_overrides(yaml.safe_load((root / "params.yaml").read_text()), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the project's tracked pipeline files into `dest` as a fresh git repo (a 'fresh clone')."""
    for item in ("src", "flows", "dvc.yaml", "params.yaml", "prefect.yaml", ".dvc/config", ".dvcignore", ".gitignore",
                 "data/raw/.gitkeep"):
        src = PROJECT / item
        if not src.exists():
            continue
        target = dest / item
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, target)
    (dest / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    write_params(dest, {**TINY, **(overrides or {})})
    env = env_for(dest, dest)
    run(["git", "init", "-q"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "fresh"], dest, env)
    return dest


@pytest.fixture
def tiny_params():
    """The project's params with the TINY sizes, typed (genops.config.Params)."""
    from genops.config import apply_overrides, validate
    from genops.config.loading import read_raw

    return validate(apply_overrides(read_raw(PROJECT), TINY), "tiny params")

"""DVC as genops drives it: one command runner (serialised: DVC holds a repo lock), remotes, lock hashes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from genops.errors import GenopsError

DVC_LOCK = threading.Lock()  # dvc holds a repo lock: its commands must not overlap


def dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([dvc_exe(), *args], cwd=root, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise GenopsError(f"`dvc {' '.join(args)}` failed in {root}:\n{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def dvc_exe() -> str:
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.exists() else (shutil.which("dvc") or "dvc")


def remote_configured(root: Path) -> bool:
    """True when the project has a default DVC remote (e.g. the team stack's bucket, `genops stack connect`)."""
    proc = subprocess.run([dvc_exe(), "config", "core.remote"], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return proc.returncode == 0 and bool(proc.stdout.strip())


def push_to_remote(root: Path) -> str:
    """`dvc push --run-cache` to the default remote; returns DVC's one-line summary."""
    with DVC_LOCK:
        out = dvc(root, "push", "--run-cache")
    return " ".join(out.split()[-6:]) if out.strip() else "nothing to push"


def out_hashes(root: Path) -> dict[str, str]:
    """Output path -> DVC hash (md5), from dvc.lock."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    return {out["path"]: out.get("md5") or out.get("hash", "") for stage in stages.values()
            for out in stage.get("outs", [])}

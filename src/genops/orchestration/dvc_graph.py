"""The DVC stage graph as the Prefect flow sees it: stages in waves, which changed, recording results.

dvc.yaml is the one description of the pipeline. The flow asks DVC for the stages and their
order, asks `dvc status` which of them changed, runs only those stage commands (several families
at once), and records the results with `dvc commit`, so after a flow run `dvc status` is clean and
a later `dvc repro` has nothing to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from genops.errors import GenopsError

_DVC_LOCK = threading.Lock()  # dvc holds a repo lock: its commands must not overlap


@dataclass(frozen=True)
class StageInfo:
    name: str  # e.g. "train@vae"
    cmd: str
    family: str | None  # the foreach item, None for shared stages


def stage_waves(root: Path, families: list[str] | None = None) -> list[list[StageInfo]]:
    """DVC's stages in dependency order, grouped so each group depends only on earlier groups."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph.reverse()  # DVC's edges point at dependencies; reverse = execution order
        waves = []
        for generation in nx.topological_generations(graph):
            wave = []
            for stage in sorted(generation, key=lambda s: s.name):
                name = stage.name
                family = name.split("@", 1)[1] if "@" in name else None
                if families is None or family is None or family in families:
                    cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
                    wave.append(StageInfo(name, cmd, family))
            if wave:
                waves.append(wave)
    return waves


def dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([_dvc_exe(), *args], cwd=root, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise GenopsError(f"`dvc {' '.join(args)}` failed in {root}:\n{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _dvc_exe() -> str:
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.exists() else (shutil.which("dvc") or "dvc")


def changed_stages(root: Path, names: list[str]) -> set[str]:
    """Which of these stages DVC would re-run (deps, params, outs or command differ from dvc.lock)."""
    with _DVC_LOCK:
        out = dvc(root, "status", "--json", *names)
    status = json.loads(out or "{}")
    return {name for name in names if name in status}


def commit_stages(root: Path, names: list[str]) -> None:
    """Record freshly produced outputs in dvc.lock (and the DVC cache)."""
    if names:
        with _DVC_LOCK:
            dvc(root, "commit", "--force", "--quiet", *names)


def remote_configured(root: Path) -> bool:
    """True when the project has a default DVC remote (e.g. the team stack's bucket, `genops stack connect`)."""
    proc = subprocess.run([_dvc_exe(), "config", "core.remote"], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return proc.returncode == 0 and bool(proc.stdout.strip())


def push_to_remote(root: Path) -> str:
    """`dvc push --run-cache` to the default remote; returns DVC's one-line summary."""
    with _DVC_LOCK:
        out = dvc(root, "push", "--run-cache")
    return " ".join(out.split()[-6:]) if out.strip() else "nothing to push"

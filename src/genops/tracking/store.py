"""Where MLflow lives for this project, and the lineage every run carries.

The default store is `sqlite:///<root>/mlflow.db` with artifacts in `<root>/mlruns`, built from the
absolute project root so stages launched by DVC, Prefect or a shell all write to one place.
`MLFLOW_TRACKING_URI` overrides it (tests point it at a temp dir).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

EXPERIMENT = "genops"


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def artifact_root(uri: str, root: Path) -> str:
    """Artifacts beside a SQLite store (so a temp-dir store keeps its artifacts in the temp dir)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlruns").resolve().as_uri()
    return (root / "mlruns").resolve().as_uri()


def setup_mlflow(root: Path) -> str:
    """Point mlflow at the project store and select (creating if needed) the genops experiment."""
    import logging

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root(uri, root))
    mlflow.set_experiment(EXPERIMENT)
    return uri


def git_commit(root: Path) -> str:
    """The checked-out commit, with '-dirty' when tracked files differ from it; 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'} for mlflow.log_params."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = str(v)
    return out

"""The MLflow run each family's training opens, which its later stages resume and log into."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow

from genops.errors import GenopsError, is_transient
from genops.storage.paths import ProjectPaths
from genops.tracking.store import setup_mlflow

RUN_JSON = "run.json"


def run_info(paths: ProjectPaths, family: str) -> dict:
    path = paths.checkpoint(family) / RUN_JSON
    if not path.is_file():
        raise GenopsError(f"{path} is missing: run `genops train {family}` first")
    return json.loads(path.read_text())


@contextmanager
def family_run(root: Path, paths: ProjectPaths, family: str) -> Iterator:
    """Resume the MLflow run that `train` opened for this family, so every stage logs into it."""
    setup_mlflow(root)
    run_id = run_info(paths, family)["run_id"]
    try:
        run = mlflow.start_run(run_id=run_id)
    except Exception as exc:  # the store was reset or moved since training
        if is_transient(exc):  # the server is unreachable, not the run missing: let the caller retry
            raise
        raise GenopsError(f"MLflow run {run_id} of {family} not found in the tracking store "
                          f"(MLFLOW_TRACKING_URI changed?): re-run `genops train {family}`") from exc
    with run:
        yield run

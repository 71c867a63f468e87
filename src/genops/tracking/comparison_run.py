"""The `comparison` MLflow run: the report as artifacts, every family's headline numbers as metrics."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow

from genops.evaluation.comparison_table import COLUMNS
from genops.tracking.store import context_tags, git_commit, setup_mlflow


def log_comparison(root: Path, out: Path, rows: dict[str, dict], experiment: str) -> str:
    """A `comparison` run holding the report and every family's headline numbers."""
    setup_mlflow(root, experiment)
    with mlflow.start_run(run_name="comparison") as run:
        mlflow.set_tags({"genops.kind": "comparison", "genops.git_commit": git_commit(root), **context_tags()})
        for fam, row in rows.items():
            mlflow.log_metrics({f"{fam}.{key}": float(row[key]) for _, key, _, _ in COLUMNS
                                if isinstance(row.get(key), int | float) and math.isfinite(row[key])})
        mlflow.log_artifacts(str(out), artifact_path="comparison")
    return run.info.run_id

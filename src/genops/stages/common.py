"""Small things every stage needs: the data spec, the validation gate, the family's MLflow run."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from genops.errors import GenopsError
from genops.paths import ProjectPaths


def require_validated(paths: ProjectPaths) -> dict:
    """Refuse to go on unless `validate` has passed on the current prepared data."""
    result = paths.validation / "result.json"
    spec = paths.prepared / "spec.json"
    if not spec.is_file():
        raise GenopsError(f"{spec} is missing: run `genops prepare` first")
    if not result.is_file():
        raise GenopsError(f"{result} is missing: run `genops validate` before training")
    verdict = json.loads(result.read_text())
    if not verdict.get("success"):
        raise GenopsError(f"{result}: the dataset failed validation; fix the data and re-run `genops validate`")
    spec_data = json.loads(spec.read_text())
    if verdict.get("data_hash") not in (None, spec_data.get("data_hash")):
        raise GenopsError(f"{result} was made for other data (data_hash differs): re-run `genops validate`")
    return spec_data


def evaluation_config(params: dict, family: str) -> dict:
    """`evaluate` with the family's own `evaluate:` overrides on top.

    Sampling costs differ by orders of magnitude between families (one pass vs one pass per pixel), so
    slow samplers may score fewer samples; the sample count is recorded with every metric.
    """
    own = (params.get(family) or {}).get("evaluate") or {}
    if not isinstance(own, dict):
        raise GenopsError(f"params.yaml {family}.evaluate must be a mapping of evaluate settings, got {own!r}")
    unknown = sorted(set(own) - set(params.get("evaluate", {})))
    if unknown:
        raise GenopsError(f"params.yaml {family}.evaluate: unknown setting(s) {', '.join(unknown)}; "
                          f"expected keys of the top-level `evaluate` section")
    return {**params.get("evaluate", {}), **own}


def run_info(paths: ProjectPaths, family: str) -> dict:
    path = paths.checkpoint(family) / "run.json"
    if not path.is_file():
        raise GenopsError(f"{path} is missing: run `genops train {family}` first")
    return json.loads(path.read_text())


@contextmanager
def family_run(root: Path, paths: ProjectPaths, family: str):
    """Resume the MLflow run that `train` opened for this family, so every stage logs into it."""
    import mlflow

    from genops.tracking.store import setup_mlflow

    setup_mlflow(root)
    run_id = run_info(paths, family)["run_id"]
    try:
        run = mlflow.start_run(run_id=run_id)
    except Exception as exc:  # the store was reset or moved since training
        raise GenopsError(f"MLflow run {run_id} of {family} not found in the tracking store "
                          f"(MLFLOW_TRACKING_URI changed?): re-run `genops train {family}`") from exc
    with run:
        yield run

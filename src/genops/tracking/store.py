"""Where MLflow lives for this project, and the lineage every run carries.

The default store is `sqlite:///<root>/mlflow.db` with artifacts in `<root>/mlruns`, built from the
absolute project root so stages launched by DVC, Prefect or a shell all write to one place.
`MLFLOW_TRACKING_URI` overrides it: a tracking server (http://...) keeps the artifacts itself (with
`--serve-artifacts` in its object store), so clients need no storage credentials and any host can load them.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import mlflow

FLOW_RUN_ENV = "GENOPS_FLOW_RUN_ID"  # set by the Prefect flow for the stages it runs


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def artifact_root(uri: str, root: Path) -> str | None:
    """Where a new experiment's artifacts go: beside a SQLite store (so a temp-dir store keeps its artifacts in
    the temp dir); for a tracking server, None: the server decides (its artifact store, proxied)."""
    if uri.startswith(("http://", "https://")):
        return None
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlruns").resolve().as_uri()
    return (root / "mlruns").resolve().as_uri()


def setup_mlflow(root: Path, experiment: str | None = None) -> str:
    """Point mlflow at the project store and, if named, select (creating if needed) the experiment."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Against a tracking server MLflow prints run URLs to stdout, where the commands write their JSON result.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if experiment is not None:
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=artifact_root(uri, root))
        mlflow.set_experiment(experiment)
    return uri


def context_tags() -> dict[str, str]:
    """Tags tying a run to what launched it: the Prefect flow run, when a flow runs the stage."""
    tags = {}
    if os.environ.get(FLOW_RUN_ENV):
        tags["genops.prefect.flow_run_id"] = os.environ[FLOW_RUN_ENV]
        api = os.environ.get("PREFECT_API_URL", "")
        if api.startswith("http"):  # a Prefect server (not the temporary one): link its UI page
            tags["genops.prefect.flow_run_url"] = f"{api.removesuffix('/').removesuffix('/api')}/runs/flow-run/" \
                                                  f"{os.environ[FLOW_RUN_ENV]}"
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run` for the stage commands it runs
        tags["genops.dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


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

"""The MLflow model registry as genops uses it: model names, fetching a version's files, aliases."""

from __future__ import annotations

from pathlib import Path

from genops.errors import GenopsError


def model_name(family: str, prefix: str) -> str:
    """The registered model of a family: `tracking.model_prefix` + family name."""
    return f"{prefix}{family}"


def champion_uri(family: str, prefix: str) -> str:
    return f"models:/{model_name(family, prefix)}@champion"


def fetch_model(model_uri: str, root: Path, dst: Path) -> Path:
    """Download a registry model; returns the folder holding family.json, weights and the graphs."""
    import mlflow

    from genops.tracking.store import setup_mlflow

    setup_mlflow(root)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except Exception as exc:  # mlflow raises several types for a missing name/alias/version
        raise GenopsError(f"cannot load {model_uri} from {mlflow.get_tracking_uri()}: {exc}") from exc
    files = local / "extra_files"
    if not (files / "family.json").is_file():
        raise GenopsError(f"{model_uri} is not a genops model (no extra_files/family.json)")
    return files


def model_version(model_uri: str):
    """The registry version a models:/NAME@ALIAS or models:/NAME/VERSION URI points at."""
    from mlflow import MlflowClient

    ref = model_uri.removeprefix("models:/")
    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, version = ref.rsplit("/", 1)
    return client.get_model_version(name, version)


def exists(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def champion_value(client, name: str, metric: str) -> tuple[str | None, float | None]:
    """The @champion's version and its recorded value of `metric` (None, None without a champion)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None, None
    raw = mv.tags.get(f"metric.{metric}")
    return mv.version, (float(raw) if raw is not None else None)

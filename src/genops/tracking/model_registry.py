"""The MLflow model registry as genops uses it: model names, fetching a version's files, aliases."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from genops.errors import GenopsError
from genops.storage.bundle import REGISTRY_BUNDLE as BUNDLE
from genops.storage.integrity import sha256_of, verify
from genops.tracking.store import setup_mlflow

log = logging.getLogger(__name__)


def model_name(family: str, prefix: str) -> str:
    """The registered model of a family: `tracking.model_prefix` + family name."""
    return f"{prefix}{family}"


def champion_uri(family: str, prefix: str) -> str:
    return f"models:/{model_name(family, prefix)}@champion"


def fetch_model(model_uri: str, root: Path, dst: Path) -> Path:
    """Download a registry model; returns the folder holding family.json, weights and the graphs."""
    setup_mlflow(root)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except Exception as exc:  # mlflow raises several types for a missing name/alias/version
        raise GenopsError(f"cannot load {model_uri} from {mlflow.get_tracking_uri()}: {exc}") from exc

    # pyfunc generators keep their files in artifacts/genops; older versions (onnx flavor) in extra_files.
    files = next((d for d in (local / "artifacts" / BUNDLE, local / "extra_files") if (d / "family.json").is_file()),
                 None)
    if files is None:
        raise GenopsError(f"{model_uri} is not a genops model (no artifacts/{BUNDLE}/family.json)")
    verify_version_files(model_uri, files)
    return files


HASH_TAG = "genops.sha256."  # + file name: the sha256 of each file of a version, recorded at registration


def hash_tags(files: list[Path]) -> dict[str, str]:
    """The version tags that record these files' hashes (the registry database keeps them apart from the artifact
    store, so a file changed in the store is caught when it is fetched)."""
    return {f"{HASH_TAG}{f.name}": sha256_of(f) for f in files}


FINGERPRINT_TAG = "genops.fingerprint"  # sha256 over the version's file hashes (the model card aside)


def version_fingerprint(file_tags: dict[str, str]) -> str:
    return hashlib.sha256("\n".join(f"{k}={v}" for k, v in sorted(file_tags.items())).encode()).hexdigest()


def find_version(client, name: str, tag: str, value: str):
    """The newest version of `name` whose tag `tag` equals `value`, or None (re-read: search results carry no
    aliases)."""
    if "'" in name + value or "`" in tag:
        raise GenopsError(f"cannot search {name!r} for tag {tag!r} = {value!r}: quotes in a filter")
    versions = client.search_model_versions(f"name = '{name}' and tags.`{tag}` = '{value}'")
    newest = max(versions, key=lambda mv: int(mv.version), default=None)
    return client.get_model_version(name, newest.version) if newest is not None else None


def verify_version_files(model_uri: str, files: Path) -> None:
    """Check every downloaded file against the hash its version recorded at registration, before anything loads."""
    tags = model_version(model_uri).tags
    recorded = {k.removeprefix(HASH_TAG): v for k, v in tags.items() if k.startswith(HASH_TAG)}
    if not recorded:
        log.warning("%s: registered without file hashes (an older genops); its files are not verified", model_uri)
    for name, sha in sorted(recorded.items()):
        verify(files / name, sha, f"the artifact store's copy of {model_uri} is damaged: register the version again "
                                  "from its checkpoint (`genops restore` it, then `genops register`)")


def model_version(model_uri: str):
    """The registry version a models:/NAME@ALIAS or models:/NAME/VERSION URI points at."""
    ref = model_uri.removeprefix("models:/")
    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, version = ref.rsplit("/", 1)
    return client.get_model_version(name, version)


def exists(client, name: str) -> bool:
    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def version_model_id(mv) -> str | None:
    """The LoggedModel behind a registry version (some stores leave `model_id` empty; its source names it)."""
    source = getattr(mv, "source", "") or ""
    return getattr(mv, "model_id", None) or (source.removeprefix("models:/") if source.startswith("models:/m-")
                                             else None)


def model_metric(client, model_id: str | None, key: str) -> float | None:
    """A metric of a LoggedModel (the newest value logged under `key`), or None."""
    if not model_id:
        return None
    values = [m for m in client.get_logged_model(model_id).metrics or [] if m.key == key]
    # The value linked to the evaluation dataset first (the same key may also be linked without one).
    return float(max(values, key=lambda m: (m.dataset_name is not None, m.timestamp)).value) if values else None


def champion_value(client, name: str, metric: str) -> tuple[str | None, float | None]:
    """The @champion's version and its value of `metric`: from its LoggedModel's metrics (MLflow 3), else from
    the `metric.*` version tag (versions registered before metrics were linked). (None, None) without one."""
    try:
        mv = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None, None
    value = model_metric(client, version_model_id(mv), metric)
    if value is None:
        raw = mv.tags.get(f"metric.{metric}")
        value = float(raw) if raw is not None else None
    return mv.version, value

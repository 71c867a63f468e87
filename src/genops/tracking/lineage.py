"""Tags that tie a registered version to the recorded run: its git commit and the DVC hashes of its outputs."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from genops.tracking.store import setup_mlflow


def tag_recorded_versions(root: Path, registrations: list[dict], commit: str, hashes: dict[str, str]) -> list[str]:
    """Set genops.lineage.commit and genops.dvc.{checkpoint,exported} on each version; returns 'name vN' lines."""
    setup_mlflow(root)
    client = MlflowClient()
    done = []
    for reg in registrations:
        family, name, version = reg["family"], reg["model"], str(reg["version"])
        tags = {"genops.lineage.commit": commit,
                "genops.dvc.checkpoint": hashes.get(f"checkpoints/{family}", ""),
                "genops.dvc.exported": hashes.get(f"exported/{family}", "")}
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        done.append(f"{name} v{version}")
    return done

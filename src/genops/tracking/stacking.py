"""Resolve the registered model a stacked family builds on (latent diffusion on the VAE).

The base comes from the MLflow registry, not from the base family's checkpoint folder, so what a stacked
model was trained on is exactly what is being served, and its version is recorded as lineage.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from genops.config.families import FAMILIES, StackedConfig
from genops.errors import GenopsError
from genops.models.family import Family
from genops.storage.bundle import load_bundle, read_meta
from genops.tracking.model_registry import champion_uri, fetch_model, model_version


def resolve_base(family_name: str, cfg: StackedConfig, root: Path, device: torch.device,
                 data_hash: str, model_prefix: str) -> tuple[Family, dict]:
    """The base model (cfg.base_model, default the base family's @champion) and its lineage: model URI, name,
    version, run id, fingerprint and data hash."""
    base_name = FAMILIES[family_name].base
    assert base_name is not None, family_name
    uri = cfg.base_model or champion_uri(base_name, model_prefix)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = fetch_model(uri, root, Path(tmp))
        except GenopsError as exc:
            raise GenopsError(f"{family_name} trains on the registered {base_name} model: {exc}. "
                              f"Run the {base_name} family through `register` first") from exc
        meta = read_meta(folder)
        base = load_bundle(folder, device)
    if base.name != base_name:
        raise GenopsError(f"{uri} holds a {base.name} model; {family_name} needs a {base_name}")
    if meta.get("data_hash") != data_hash:
        raise GenopsError(f"{uri} was trained on other data (data hash {meta.get('data_hash')}, current "
                          f"{data_hash}): re-run the {base_name} family on this data first")
    mv = model_version(uri)
    return base, {"family": base_name, "model_uri": uri, "model": mv.name, "version": str(mv.version),
                  "run_id": mv.run_id or "", "fingerprint": meta.get("fingerprint", ""), "data_hash": data_hash}

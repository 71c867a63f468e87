"""Resolve the registered model a stacked family builds on (latent diffusion on the VAE).

The base comes from the MLflow registry, not from the base family's checkpoint folder, so what a stacked
model was trained on is exactly what is being served, and its version is recorded as lineage.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from genops.errors import GenopsError
from genops.models.base import Family


def check_stacked(family_name: str, base: str, params: dict) -> None:
    """The DVC graph must train a stacked family after its base is registered: `stacked: {name: base}`."""
    declared = (params.get("stacked") or {}).get(family_name)
    if declared != base:
        raise GenopsError(f"params.yaml: {family_name} is trained on the registered {base} model, so it must be "
                          f"listed under `stacked:` as `{family_name}: {base}` (not under `families:`), which makes "
                          f"DVC train it after {base} is registered; found stacked.{family_name} = {declared!r}")


def _version(model_uri: str):
    """The registry version a models:/NAME@ALIAS or models:/NAME/VERSION URI points at."""
    from mlflow import MlflowClient

    ref = model_uri.removeprefix("models:/")
    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, version = ref.rsplit("/", 1)
    return client.get_model_version(name, version)


def attach_registered_base(family: Family, cfg: dict, root: Path, device: torch.device, data_hash: str) -> dict:
    """Fetch the base model (cfg `base_model`, default its family's @champion), hand it to the family and
    return its lineage: model URI, name, version, run id, fingerprint and data hash."""
    from genops.bundle import load_bundle, read_meta
    from genops.stages.register import model_name
    from genops.stages.sample import fetch_model

    base_name = family.base_family
    assert base_name is not None
    uri = str(cfg.get("base_model") or f"models:/{model_name(base_name)}@champion")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = fetch_model(uri, root, Path(tmp))
        except GenopsError as exc:
            raise GenopsError(f"{family.name} trains on the registered {base_name} model: {exc}. "
                              f"Run the {base_name} family through `register` first") from exc
        meta = read_meta(folder)
        base = load_bundle(folder, device)
    if base.name != base_name:
        raise GenopsError(f"{uri} holds a {base.name} model; {family.name} needs a {base_name}")
    if meta.get("data_hash") != data_hash:
        raise GenopsError(f"{uri} was trained on other data (data hash {meta.get('data_hash')}, current "
                          f"{data_hash}): re-run the {base_name} family on this data first")
    mv = _version(uri)
    family.attach_base(base)
    return {"family": base_name, "model_uri": uri, "model": mv.name, "version": str(mv.version),
            "run_id": mv.run_id or "", "fingerprint": meta.get("fingerprint", ""), "data_hash": data_hash}

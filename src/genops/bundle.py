"""A trained model on disk: `family.json` (name, params, data spec) + `weights.safetensors`.

The same two files travel into the MLflow model version, so `genops sample --backend torch`
rebuilds the exact network from the registry alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genops.data.spec import DataSpec
from genops.models.base import Family
from genops.models.registry import instantiate

FAMILY_JSON = "family.json"
WEIGHTS = "weights.safetensors"


def save_bundle(folder: Path, family: Family, extra: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"family": family.name, "cfg": family.cfg, "spec": family.spec.to_dict(), **(extra or {})}
    (folder / FAMILY_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    save_file({k: v.detach().contiguous().cpu() for k, v in family.state_dict().items()}, str(folder / WEIGHTS))


def read_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / FAMILY_JSON).read_text())


def load_bundle(folder: Path, device: torch.device | str = "cpu", weights: bool = True) -> Family:
    meta = read_meta(folder)
    family = instantiate(meta["family"], meta["cfg"], DataSpec.from_dict(meta["spec"]))
    if weights:
        family.load_state_dict(load_file(str(Path(folder) / WEIGHTS)))
    family.to(torch.device(device))
    family.train_mode(False)
    return family

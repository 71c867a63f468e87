"""A trained model on disk: `family.json` (name, typed config, data spec, base config) + `weights.safetensors`.

The same two files travel into the MLflow model version, so `genops sample --backend torch` rebuilds the
exact network from the registry alone. A stacked family (latent diffusion) also stores its base family's
config, so the base's networks can be rebuilt before this family's weights (which include them) load.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from genops.config.families import FAMILIES, FamilyConfig
from genops.data.spec import DataSpec
from genops.errors import GenopsError
from genops.models.family import Family
from genops.models.registry import config_class, instantiate
from genops.storage.integrity import record_hashes, verify_recorded

log = logging.getLogger(__name__)

FAMILY_JSON = "family.json"
WEIGHTS = "weights.safetensors"
REGISTRY_BUNDLE = "genops"  # the folder of a registered version's artifacts holding these files and its graphs


def family_meta(family: Family, extra: dict | None = None) -> dict:
    """What family.json holds: enough to rebuild the family (and its base) without params.yaml."""
    meta = {"family": family.name, "cfg": family.cfg.model_dump(mode="json", by_alias=True),
            "spec": family.spec.to_dict(), **(extra or {})}
    base_cfg = getattr(family, "base_cfg", None)
    if isinstance(base_cfg, FamilyConfig):
        meta["base_cfg"] = base_cfg.model_dump(mode="json", by_alias=True)
    return meta


def save_bundle(folder: Path, family: Family, extra: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_meta(folder, family_meta(family, extra))
    save_file({k: v.detach().contiguous().cpu() for k, v in family.state_dict().items()}, str(folder / WEIGHTS))
    record_hashes(folder, [WEIGHTS])  # checked by load_bundle before the weights are read


def write_meta(folder: Path, meta: dict) -> None:
    (Path(folder) / FAMILY_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")


def read_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / FAMILY_JSON).read_text())


def parse_config(name: str, raw: dict, where: str) -> FamilyConfig:
    """A stored config, validated by the family's config class. Keys a later release renamed (`Section.renamed`)
    are read under their new names, and keys this version no longer knows (a model registered by an older
    genops) are dropped, each with a warning naming them; wrong values are errors."""
    cls = config_class(name)
    moved = {old: new for old, new in cls.renamed.items() if old in raw and new not in raw}
    if moved:
        log.warning("%s: reading stored %s config keys under their new names: %s", where, name,
                    ", ".join(f"{old} -> {new}" for old, new in moved.items()))
        raw = {moved.get(k, k): v for k, v in raw.items()}
    known = {info.alias or key for key, info in cls.model_fields.items()}
    dropped = sorted(set(raw) - known)
    if dropped:
        log.warning("%s: ignoring stored %s config keys this version does not use: %s", where, name,
                    ", ".join(dropped))
    try:
        return cls.model_validate({k: v for k, v in raw.items() if k in known})
    except ValidationError as exc:
        raise GenopsError(f"{where}: the stored {name} config is invalid: {exc}") from None


def load_bundle(folder: Path, device: torch.device | str = "cpu", weights: bool = True) -> Family:
    folder = Path(folder)
    meta = read_meta(folder)
    name = meta["family"]
    spec = DataSpec.from_dict(meta["spec"])
    base = None
    base_family = FAMILIES[name].base if name in FAMILIES else None
    if base_family:
        meta.setdefault("base_cfg", meta["cfg"].get("base_cfg"))  # genops < 0.2 kept it inside cfg
        if not meta["base_cfg"]:
            raise GenopsError(f"{folder / FAMILY_JSON}: {name} is built on a {base_family} but no base_cfg is stored")
        base = instantiate(base_family, parse_config(base_family, meta["base_cfg"], str(folder)), spec)
    family = instantiate(name, parse_config(name, meta["cfg"], str(folder)), spec, base)
    if weights:
        verify_recorded(folder, [WEIGHTS], "re-run the stage that wrote it (`genops train`, or `dvc pull` / "
                                           "`dvc checkout` to restore the recorded version)")
        family.load_state_dict(load_file(str(folder / WEIGHTS)))
    family.to(torch.device(device))
    family.train_mode(False)
    return family

"""params.yaml loading, `--set key=value` overrides and the project root.

Every stage reads the same params.yaml that DVC tracks, so a CLI run and a `dvc repro` run of
the same stage see identical settings.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from genops.errors import GenopsError

PARAMS_FILE = "params.yaml"


def project_root() -> Path:
    """The folder holding params.yaml: GENOPS_ROOT, else DVC_ROOT, else the nearest parent of cwd."""
    for var in ("GENOPS_ROOT", "DVC_ROOT"):
        if os.environ.get(var):
            return Path(os.environ[var]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / PARAMS_FILE).is_file():
            return folder
    raise GenopsError(f"no {PARAMS_FILE} found in {here} or its parents (set GENOPS_ROOT)")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `a.b=value`; the value is read as YAML so numbers, booleans and lists keep their type."""
    if "=" not in text:
        raise GenopsError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise GenopsError(f"--set expects key=value, got {text!r}")
    return key, yaml.safe_load(raw) if raw.strip() else None


def set_dotted(params: dict, key: str, value: Any) -> None:
    """Set params['a']['b'] for key 'a.b'; unknown keys are an error so typos do not pass silently."""
    node = params
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise GenopsError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a section of {PARAMS_FILE}")
        node = node[part]
    if parts[-1] not in node:
        known = ", ".join(sorted(node))
        raise GenopsError(f"--set {key}: unknown key '{parts[-1]}' (known here: {known})")
    node[parts[-1]] = value


def apply_overrides(params: dict, overrides: list[str] | dict[str, Any] | None) -> dict:
    """Return a copy of params with overrides applied (strings `k=v` or a mapping)."""
    out = copy.deepcopy(params)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    for key, value in items:
        set_dotted(out, key, value)
    return out


def all_families(params: dict) -> list[str]:
    """`families` (trained on the data alone) then `stacked` (trained on another family's registered model)."""
    stacked = params.get("stacked") or {}
    if not isinstance(stacked, dict):
        raise GenopsError(f"{PARAMS_FILE}: `stacked` must map family -> base family, got {stacked!r}")
    families = list(params.get("families") or [])
    both = sorted(set(families) & set(stacked))
    if both:
        raise GenopsError(f"{PARAMS_FILE}: {', '.join(both)} listed under both `families` and `stacked`; "
                          f"a family trained on a registered base belongs under `stacked` only")
    return families + list(stacked)


def load_params(root: Path | None = None, overrides: list[str] | None = None) -> dict:
    """params.yaml with overrides applied."""
    path = (root or project_root()) / PARAMS_FILE
    if not path.is_file():
        raise GenopsError(f"{path} not found")
    with path.open() as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, dict):
        raise GenopsError(f"{path}: expected a mapping at the top level")
    return apply_overrides(params, overrides)


def smoke_params(params: dict) -> dict:
    """The params with the `smoke:` section's overrides applied (tiny sizes, same code paths)."""
    smoke = params.get("smoke") or {}
    return apply_overrides(params, dict(smoke))


def params_hash(params: dict) -> str:
    """A stable short hash of a params mapping, for lineage tags."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

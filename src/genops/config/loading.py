"""Reading params.yaml into `Params`, `--set key=value` overrides, and errors a person can act on.

Every stage reads the same params.yaml that DVC tracks, so a CLI run and a `dvc repro` run of the same
stage see identical settings. The file is validated whole before any stage runs: an unknown key, a wrong
type or an out-of-range value fails with the file, the dotted key, what was expected and, for a
misspelling, the closest valid key.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from genops.config.params import Params
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


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """raw['a']['b'] = value for key 'a.b' (missing sections are created; the schema then checks the key)."""
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise GenopsError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
    node[parts[-1]] = value


def apply_overrides(raw: dict, overrides: list[str] | dict[str, Any] | None) -> dict:
    """A copy of the raw mapping with overrides applied (strings `k=v` or a mapping of dotted keys)."""
    out = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    for key, value in items:
        set_dotted(out, key, value)
    return out


def validate(raw: Any, source: str) -> Params:
    """The typed configuration, or a GenopsError naming each bad key in `source`."""
    if not isinstance(raw, dict):
        raise GenopsError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise GenopsError("\n".join(_explain(e, source) for e in exc.errors())) from None


def params_path(root: Path) -> Path:
    """root/params.yaml, or GENOPS_PARAMS_FILE: the resolved params a stage hands to the processes it launches
    (torchrun ranks), so they train with exactly its settings, overrides included."""
    return Path(os.environ["GENOPS_PARAMS_FILE"]) if os.environ.get("GENOPS_PARAMS_FILE") else root / PARAMS_FILE


def read_raw(root: Path) -> dict:
    path = params_path(root)
    if not path.is_file():
        raise GenopsError(f"{path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise GenopsError(f"{path}: not valid YAML: {exc}") from None
    return raw


def load_params(root: Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Params:
    """params.yaml (validated), then the overrides (validated again, so an error names `--set`)."""
    root = root or project_root()
    raw = read_raw(root)
    params = validate(raw, str(params_path(root)))
    check_smoke(params, str(params_path(root)))
    if overrides:
        params = validate(apply_overrides(raw, overrides), "--set")
    return params


def check_smoke(params: Params, source: str) -> None:
    """The `smoke:` and `profiles:` overrides must name real keys with valid values, like everything else."""
    try:
        smoke_params(params)
    except GenopsError as exc:
        raise GenopsError(f"{source}: the `smoke:` section does not apply cleanly:\n{exc}") from None
    for name, overrides in params.profiles.items():
        try:  # against the schema defaults: a profile is checked in full where it is applied (--profile)
            validate(apply_overrides(dump(Params()), overrides), f"profiles.{name}")
        except GenopsError as exc:
            raise GenopsError(f"{source}: profile `{name}` does not apply cleanly:\n{exc}") from None


def profile_overrides(params: Params, name: str) -> list[str]:
    """`--profile NAME` as `--set key=value` overrides (the user's own --set come after and win)."""
    if name not in params.profiles:
        raise GenopsError(f"--profile {name}: no such profile in params.yaml `profiles` "
                          f"({', '.join(params.profiles) or 'none'})")
    return [f"{k}={json.dumps(v)}" for k, v in params.profiles[name].items()]


def smoke_params(params: Params) -> Params:
    """The params with the `smoke:` section's overrides applied (tiny sizes, same code paths)."""
    return validate(apply_overrides(dump(params), dict(params.smoke)), "smoke")


def dump(params: BaseModel) -> dict:
    """Plain YAML-able values under the params.yaml key names."""
    return params.model_dump(mode="json", by_alias=True)


def params_hash(obj: Any) -> str:
    """A stable short hash of a params mapping (or model), for fingerprints and lineage tags."""
    if isinstance(obj, BaseModel):
        obj = dump(obj)
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --- error messages ------------------------------------------------------------------------------------


def _explain(err: dict, source: str) -> str:
    loc = [str(p) for p in err["loc"]]
    where = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        known = _keys_at(loc[:-1])
        best = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        hint = f"did you mean {best[0]}?" if best else f"known keys here: {', '.join(known)}"
        return f"{source}: {where}: unknown key; {hint}"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if err["type"] == "value_error" or isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: {where}: {msg}{shown}"


def _keys_at(loc: list[str]) -> list[str]:
    """The valid key names of the section at `loc` (empty when loc does not lead to a section)."""
    model: type[BaseModel] | None = Params
    for part in loc:
        fields = {info.alias or name: info for name, info in model.model_fields.items()} if model else {}
        info = fields.get(part)
        model = _section_type(info.annotation) if info else None
        if model is None:
            return []
    return [info.alias or name for name, info in model.model_fields.items()] if model else []


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_type(arg)
        if found:
            return found
    return None

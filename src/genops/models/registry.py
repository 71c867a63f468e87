"""Family name -> implementation class, from the registry in genops.config.families.

Classes are imported lazily so `genops --help` and params validation stay fast (no torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pydantic import ValidationError

from genops.config.families import FAMILIES, FamilyConfig
from genops.data.spec import DataSpec
from genops.errors import GenopsError

if TYPE_CHECKING:
    from genops.models.family import Family


def family_class(name: str) -> type[Family]:
    if name not in FAMILIES:
        raise GenopsError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    module, cls = FAMILIES[name].impl.split(":")
    return getattr(importlib.import_module(module), cls)


def config_class(name: str) -> type[FamilyConfig]:
    if name not in FAMILIES:
        raise GenopsError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name].config


def build_family(name: str, spec: DataSpec, cfg: FamilyConfig | dict | None = None,
                 base: Family | None = None) -> Family:
    """Build family `name` from its typed config, or from a mapping of its keys (validated by its config class,
    defaults for the rest; an unknown key is an error) — handy in notebooks and tests."""
    if not isinstance(cfg, FamilyConfig):
        try:
            cfg = config_class(name).model_validate(cfg or {})
        except ValidationError as exc:
            raise GenopsError(f"{name} config: {exc}") from None
    return instantiate(name, cfg, spec, base)


def instantiate(name: str, cfg: FamilyConfig, spec: DataSpec, base: Family | None = None) -> Family:
    """Build family `name` from its typed config (whose class names the family the instance is: see
    genops.config.families.registered_name)."""
    if not isinstance(cfg, config_class(name)):
        raise GenopsError(f"{name} is configured by {config_class(name).__name__}, got {type(cfg).__name__}")
    return family_class(name)(cfg, spec, base)

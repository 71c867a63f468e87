"""The one typed configuration: params.yaml validated into `Params` (see genops.config.params)."""

from genops.config.families import FAMILIES, FamilyConfig, FamilyEntry, StackedConfig
from genops.config.loading import (
    PARAMS_FILE,
    apply_overrides,
    dump,
    load_params,
    params_hash,
    parse_override,
    project_root,
    smoke_params,
    validate,
)
from genops.config.params import Params, attribute

__all__ = ["FAMILIES", "PARAMS_FILE", "FamilyConfig", "FamilyEntry", "Params", "StackedConfig", "apply_overrides",
           "attribute", "dump", "load_params", "params_hash", "parse_override", "project_root", "smoke_params",
           "validate"]

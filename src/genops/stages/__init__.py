"""One function per pipeline stage. The CLI, DVC and Prefect are thin wrappers over these."""

from __future__ import annotations

import importlib
from pathlib import Path

# stage name -> "module:function"; each function takes (family, params, root).
FAMILY_STAGES = {
    "train": "genops.stages.train:train_stage",
    "evaluate": "genops.stages.evaluate:evaluate_stage",
    "export": "genops.stages.export:export_stage",
    "register": "genops.stages.register:register_stage",
}


def run_family_stage(stage: str, family: str, params: dict, root: Path):
    from genops.models.registry import family_class

    family_class(family)  # unknown family -> clear error before any work
    module, fn = FAMILY_STAGES[stage].split(":")
    return getattr(importlib.import_module(module), fn)(family, params, root)

"""One thin function per pipeline stage, taking params and paths and returning a small result.

Stages never import one another; what several need lives in the library packages (evaluation, tracking,
validation, storage, serving). The CLI (`genops ...`), DVC and the Prefect flow are thin wrappers over these.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from genops.config import Params

# stage name -> "module:function"; each function takes (family, params, root).
FAMILY_STAGES = {
    "train": "genops.stages.train:train_stage",
    "evaluate": "genops.stages.evaluate:evaluate_stage",
    "export": "genops.stages.export:export_stage",
    "register": "genops.stages.register:register_stage",
}


def run_family_stage(stage: str, family: str, params: Params, root: Path):
    params.family(family)  # unknown family -> clear error before any work
    module, fn = FAMILY_STAGES[stage].split(":")
    return getattr(importlib.import_module(module), fn)(family, params, root)

"""Finding the command-line tools genops drives (dvc, mlflow, prefect, weed): this environment's first.

A console script installed beside the running interpreter wins over one on PATH, so a venv's genops drives
the venv's dvc and mlflow even when PATH was not activated (DVC stage commands, Prefect workers).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def console_script(name: str) -> str | None:
    """The path of `name` in this interpreter's environment, else on PATH, else None."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)

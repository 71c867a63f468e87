"""validate: the great-expectations suite on data/prepared; training starts only if it passes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genops.config import Params
from genops.storage.paths import ProjectPaths
from genops.validation.suite import validate


@dataclass
class ValidateResult:
    success: bool
    n_rows: int
    result: str


def validate_stage(params: Params, root: Path) -> ValidateResult:
    """Raises ValidationFailed (naming each failed expectation) when the data is rejected."""
    paths = ProjectPaths(root)
    report = validate(params.validation, paths.prepared, paths.validation)
    return ValidateResult(report.success, report.n_rows, str(report.result_path))

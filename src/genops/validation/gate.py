"""The validation gate: nothing trains on data that has not passed `genops validate`."""

from __future__ import annotations

import json

from genops.errors import GenopsError
from genops.storage.paths import ProjectPaths


def require_validated(paths: ProjectPaths) -> dict:
    """The prepared data's spec.json, or an error unless `validate` has passed on exactly this data."""
    result = paths.validation / "result.json"
    spec = paths.prepared / "spec.json"
    if not spec.is_file():
        raise GenopsError(f"{spec} is missing: run `genops prepare` first")
    if not result.is_file():
        raise GenopsError(f"{result} is missing: run `genops validate` before training")
    verdict = json.loads(result.read_text())
    if not verdict.get("success"):
        raise GenopsError(f"{result}: the dataset failed validation; fix the data and re-run `genops validate`")
    spec_data = json.loads(spec.read_text())
    if verdict.get("data_hash") not in (None, spec_data.get("data_hash")):
        raise GenopsError(f"{result} was made for other data (data_hash differs): re-run `genops validate`")
    return spec_data

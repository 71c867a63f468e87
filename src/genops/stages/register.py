"""register: a new version of `genops-FAMILY` in the MLflow registry, promoted only if it is better.

The version is a runnable generator: a pyfunc model logged from code (genops.serving.generator) whose artifacts
are the ONNX graphs, the torch weights, family.json, hashes.json and the model card; `predict` takes one request
per row (`n`, `seed`, the family's sampling options) and returns uint8 images, so `mlflow models serve` answers
REST requests with images. The evaluation metrics are linked to the version's LoggedModel and to the evaluation
dataset; the model card is the version's (and the registered model's) description. Promotion compares the
family's primary metric with the current `@champion`'s (read from its LoggedModel): the
candidate becomes `@champion` only if it beats it by more than the larger of `register.min_improvement`
(a fraction of the champion's value) and the half-width of the candidate's own interval of that metric
(evaluate.bootstrap), and only if its copy_fraction is within `register.max_copy_fraction`; else
`@challenger`. The decision, both values, the margin, the half-width and the improvement required are
written to the version's tags and to reports/registry/FAMILY.json.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from mlflow import MlflowClient

from genops.config import Params
from genops.storage.atomic import write_json_atomic
from genops.storage.paths import ProjectPaths
from genops.tracking import version as v
from genops.tracking.model_registry import (
    FINGERPRINT_TAG,
    exists,
    find_version,
    hash_tags,
    model_name,
    version_fingerprint,
    version_model_id,
)
from genops.tracking.runs import family_run, run_info

log = logging.getLogger(__name__)


def register_stage(family_name: str, params: Params, root: Path) -> dict:
    paths = ProjectPaths(root)
    candidate = v.read_candidate(paths, family_name)
    name = model_name(family_name, params.tracking.model_prefix)
    lineage = v.lineage(root, candidate, run_info(paths, family_name)["run_id"])
    with family_run(root, paths, family_name), tempfile.TemporaryDirectory() as tmp:
        files = v.stage_bundle(Path(tmp), paths, candidate)
        # Idempotent: the same files (weights, graphs, config, metrics) are one version, however often register
        # runs (a retry after the tracking server went away, a rerun after a kill): found, it is not made twice.
        fingerprint = version_fingerprint(hash_tags(files))
        client = MlflowClient()
        found = find_version(client, name, FINGERPRINT_TAG, fingerprint) if exists(client, name) else None
        if found is not None and found.aliases:
            return _done(paths, name, {
                "family": family_name, "model": name, "version": int(found.version),
                "alias": sorted(found.aliases)[0], "primary_metric": candidate.primary,
                "candidate_value": candidate.value, "reason": f"already registered as version {found.version} "
                f"(same files, fingerprint {fingerprint[:12]}); nothing registered", "already_registered": True,
                **lineage})
        decision = v.promotion(client, name, candidate, params.register)
        short_card = v.write_card_and_hashes(files, name, candidate, lineage, decision)
        tags = v.version_tags(files, lineage, fingerprint, candidate, decision)
        if found is None:
            mv = v.new_version(Path(tmp), files, name, candidate, tags, params.serving, paths)
        else:  # made by an attempt that stopped before its alias was set: finish that version
            mv = found
            v.finish_version(client, name, mv, tags)
        v.describe_and_alias(client, name, family_name, mv, decision, short_card)
    return _done(paths, name, {
        "family": family_name, "model": name, "version": int(mv.version), "alias": decision.alias,
        "model_id": version_model_id(mv), "primary_metric": candidate.primary, "candidate_value": candidate.value,
        "champion_value": decision.previous_value, "previous_champion": decision.previous,
        "reason": decision.reason, **decision.rule, **lineage})


def _done(paths: ProjectPaths, name: str, result: dict) -> dict:
    write_json_atomic(paths.registration(result["family"]), result)
    if result.get("already_registered"):
        log.info("register %s: %s", name, result["reason"])
    else:
        log.info("register %s: version %s -> @%s (%s)", name, result["version"], result["alias"], result["reason"])
    return result

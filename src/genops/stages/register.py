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

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

from genops.config import Params
from genops.errors import GenopsError
from genops.storage.atomic import write_json_atomic
from genops.storage.bundle import FAMILY_JSON, WEIGHTS, read_meta
from genops.storage.paths import ProjectPaths

log = logging.getLogger(__name__)


def register_stage(family_name: str, params: Params, root: Path) -> dict:
    import mlflow
    from mlflow import MlflowClient

    from genops.serving.environment import code_digest, copy_code, serving_requirements
    from genops.storage.bundle import REGISTRY_BUNDLE as BUNDLE
    from genops.storage.integrity import record_hashes, verify_recorded
    from genops.tracking.logged_model import evaluation_dataset, link_metrics, log_generator
    from genops.tracking.model_card import fit_description, model_card, registry_card
    from genops.tracking.promotion import decide, half_width
    from genops.tracking.registry import (
        FINGERPRINT_TAG,
        champion_value,
        exists,
        find_version,
        hash_tags,
        model_name,
        version_fingerprint,
        version_model_id,
    )
    from genops.tracking.runs import family_run, run_info
    from genops.tracking.store import context_tags, git_commit
    from genops.versioning.dvc import out_hashes

    paths = ProjectPaths(root)
    cfg = params.register
    ckpt, exported = paths.checkpoint(family_name), paths.exported(family_name)
    for needed in (paths.metrics(family_name), exported / "export.json", ckpt / FAMILY_JSON):
        if not needed.is_file():
            raise GenopsError(f"{needed} is missing: run the earlier stages for {family_name} first")
    metrics = json.loads(paths.metrics(family_name).read_text())
    export = json.loads((exported / "export.json").read_text())
    meta = read_meta(ckpt)
    spec_data = json.loads((paths.prepared / "spec.json").read_text())
    floor = json.loads(paths.evaluator_metrics.read_text()) if paths.evaluator_metrics.is_file() else {}
    primary, direction = metrics["primary_metric"], metrics["primary_direction"]
    value = float(metrics.get(primary, float("nan")))
    if not math.isfinite(value):
        raise GenopsError(f"metrics/{family_name}.json: primary metric {primary}={value}; not registering")
    if meta.get("data_hash") != spec_data["data_hash"]:
        raise GenopsError(f"{ckpt} was trained on other data than data/prepared; re-run training")

    name = model_name(family_name, params.tracking.model_prefix)
    run_id = run_info(paths, family_name)["run_id"]
    lineage = {"family": family_name, "git_commit": git_commit(root), "data_hash": spec_data["data_hash"], **{
               k.removeprefix("genops."): v for k, v in context_tags().items()},
               "data_source": spec_data["source"], "params_hash": meta.get("fingerprint", ""), "run_id": run_id}
    # A stacked family (latent diffusion) records the registered base model version it was trained on.
    lineage.update({f"base.{k}": v for k, v in (meta.get("base") or {}).items()})
    # A family trained on extra data sources (CycleGAN's domain B) records each one's source and content hash.
    lineage.update({f"data.{role}.{k}": v for role, d in (meta.get("domains") or {}).items() for k, v in d.items()})
    # The DVC hashes of this version's checkpoint and graphs (dvc.lock has them once those stages are recorded).
    hashes = out_hashes(root)
    lineage.update({k: hashes[p] for k, p in (("dvc.checkpoint", f"checkpoints/{family_name}"),
                                               ("dvc.exported", f"exported/{family_name}")) if hashes.get(p)})
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)}
    with family_run(root, paths, family_name), tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / BUNDLE
        bundle.mkdir()
        files = [ckpt / FAMILY_JSON, ckpt / WEIGHTS, exported / "export.json", paths.metrics(family_name),
                 *[exported / f"{g}.onnx" for g in export["graphs"]]]
        verify_recorded(exported, [f"{g}.onnx" for g in export["graphs"]], "re-run `genops export`")
        for f in files:  # copied into one folder so the names inside the model are stable
            shutil.copy(f, bundle / f.name)
        # Idempotent: the same files (weights, graphs, config, metrics) are one version, however often register
        # runs (a retry after the tracking server went away, a rerun after a kill): found, it is not made twice.
        file_tags = hash_tags([bundle / f.name for f in files])
        fingerprint = version_fingerprint(file_tags)
        client = MlflowClient()
        found = find_version(client, name, FINGERPRINT_TAG, fingerprint) if exists(client, name) else None
        if found is not None and found.aliases:
            result = {"family": family_name, "model": name, "version": int(found.version),
                      "alias": sorted(found.aliases)[0], "primary_metric": primary, "candidate_value": value,
                      "reason": f"already registered as version {found.version} (same files, fingerprint "
                                f"{fingerprint[:12]}); nothing registered", "already_registered": True, **lineage}
            write_json_atomic(paths.registration(family_name), result)
            log.info("register %s: %s", name, result["reason"])
            return result
        prev_version, prev_value = champion_value(client, name, primary) if exists(client, name) else (None, None)
        copies = metrics.get("copy_fraction")
        decision = decide(value, prev_value, direction, cfg.min_improvement, half_width(metrics, primary),
                          float(copies) if isinstance(copies, int | float) else None, cfg.max_copy_fraction)
        promote, reason = decision.promote, decision.reason
        alias = "champion" if promote else "challenger"
        rule = {"margin": decision.margin, "interval_half_width": decision.half_width,
                "required_improvement": decision.required, "copy_fraction": copies,
                "max_copy_fraction": cfg.max_copy_fraction}
        outcome = {"alias": alias, "reason": reason, "previous_champion": prev_version, "champion_value": prev_value}
        card_args = (family_name, name, meta, metrics, export, lineage, floor, outcome)
        card, short_card = model_card(*card_args), model_card(*card_args, compact=True)
        (bundle / "MODEL_CARD.md").write_text(card)
        # hashes.json: what the generator checks before loading anything (the version tags guard hashes.json).
        record_hashes(bundle, [f.name for f in files])
        tags = {**{f"genops.{k}": str(v) for k, v in lineage.items()},
                **hash_tags([bundle / f.name for f in files] + [bundle / "MODEL_CARD.md", bundle / "hashes.json"]),
                FINGERPRINT_TAG: fingerprint,
                **{f"metric.{k}": str(v) for k, v in metrics.items() if isinstance(v, int | float)},
                "genops.primary_metric": primary, "genops.promotion.decision": alias,
                "genops.promotion.reason": reason, "genops.promotion.champion_value": str(prev_value),
                "genops.promotion.previous_champion": str(prev_version),
                **{f"genops.promotion.{k}": str(v) for k, v in rule.items()}}
        if found is None:
            code = copy_code(Path(tmp) / "code")
            tags.update({"genops.serving.requirements": params.serving.requirements,
                         "genops.serving.code_sha256": code_digest(code)})
            info = log_generator(bundle, family_name, bool(meta["cfg"].get("conditional")),
                                 serving_requirements(params.serving.requirements), code,
                                 {"max_images": params.serving.max_images, "max_work": params.serving.max_work})
            link_metrics(info.model_id, numeric, evaluation_dataset(paths.prepared, spec_data))
            mv = mlflow.register_model(info.model_uri, name, tags=tags)
        else:  # made by an attempt that stopped before its alias was set: finish that version
            mv = found
            for k, v in tags.items():
                client.set_model_version_tag(name, mv.version, k, v)
        client.update_model_version(name, mv.version, description=fit_description(
            f"{VERSION_HEADER.format(mv.version, alias)}\n\n{short_card}"))
        champion_card = short_card if promote else _stored_card(client, name, prev_version)
        client.update_registered_model(name, description=fit_description(registry_card(
            family_name, name, mv.version if promote else prev_version, champion_card)))
        client.set_registered_model_alias(name, alias, mv.version)
        mlflow.set_tags({"genops.registered_version": mv.version, "genops.alias": alias})
    result = {"family": family_name, "model": name, "version": int(mv.version), "alias": alias,
              "model_id": version_model_id(mv), "primary_metric": primary, "candidate_value": value,
              "champion_value": prev_value, "previous_champion": prev_version, "reason": reason, **rule, **lineage}
    write_json_atomic(paths.registration(family_name), result)
    log.info("register %s: version %s -> @%s (%s)", name, mv.version, alias, reason)
    return result


VERSION_HEADER = "**Version {}** (decided at registration: @{})"


def _stored_card(client, name: str, version) -> str | None:
    """The model card a version was registered with (its description, without the version header)."""
    if version is None:
        return None
    description = client.get_model_version(name, version).description or ""
    return description.split("\n\n", 1)[1] if description.startswith("**Version") else description or None


def _summary(family: str) -> str:
    from genops.models.registry import family_class

    return family_class(family).info.summary

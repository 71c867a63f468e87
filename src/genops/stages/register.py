"""register: a new version of `genops-FAMILY` in the MLflow registry, promoted only if it is better.

The version holds the ONNX sampler (onnx flavor, signature, input example) and, as extra files,
the other graphs, the torch weights, family.json and a model card. Promotion compares the
family's primary metric with the current `@champion`'s (recorded on that version as a tag): the
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

import numpy as np

from genops.config import Params
from genops.errors import GenopsError
from genops.storage.atomic import write_json_atomic
from genops.storage.bundle import FAMILY_JSON, WEIGHTS, read_meta
from genops.storage.paths import ProjectPaths

log = logging.getLogger(__name__)


def register_stage(family_name: str, params: Params, root: Path) -> dict:
    import mlflow
    import onnx
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from genops.serving.onnx_runtime import make_session
    from genops.storage.integrity import verify_recorded
    from genops.tracking.model_card import model_card
    from genops.tracking.promotion import decide, half_width
    from genops.tracking.registry import (
        FINGERPRINT_TAG,
        champion_value,
        exists,
        find_version,
        hash_tags,
        model_name,
        version_fingerprint,
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
    # The DVC hashes of this version's checkpoint and graphs (dvc.lock has them once those stages are recorded).
    hashes = out_hashes(root)
    lineage.update({k: hashes[p] for k, p in (("dvc.checkpoint", f"checkpoints/{family_name}"),
                                               ("dvc.exported", f"exported/{family_name}")) if hashes.get(p)})
    sampler = next(iter(export["graphs"]))
    with family_run(root, paths, family_name), tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        card = tmp / "MODEL_CARD.md"
        card.write_text(model_card(family_name, name, meta, metrics, export, lineage))
        extra = [card, ckpt / FAMILY_JSON, ckpt / WEIGHTS, exported / "export.json", paths.metrics(family_name)]
        extra += [exported / f"{g}.onnx" for g in export["graphs"]]
        for f in extra:  # copy next to the card so the names inside the model are stable
            if f.parent != tmp:
                shutil.copy(f, tmp / f.name)
        staged = [str(tmp / f.name) for f in extra]
        # Idempotent: the same files (weights, graphs, config, metrics) are one version, however often register
        # runs (a retry after the tracking server went away, a rerun after a kill): found, it is not made twice.
        file_tags = hash_tags([Path(f) for f in staged if Path(f).name != card.name])
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
        with np.load(exported / f"{sampler}.example.npz") as npz:
            example = {k: npz[k] for k in export["graphs"][sampler]["inputs"]}
        verify_recorded(exported, [f"{g}.onnx" for g in export["graphs"]], "re-run `genops export`")
        session = make_session(exported / f"{sampler}.onnx")
        out = session.run(None, example)[0]
        info = None if found is not None else mlflow.onnx.log_model(
            onnx.load(str(exported / f"{sampler}.onnx")), name="model",
            signature=infer_signature(example, out), input_example=example,
            pip_requirements=["onnxruntime-gpu==1.31.1", f"onnx=={onnx.__version__}", "numpy"],
            onnx_execution_providers=export["providers"], save_as_external_data=False, extra_files=staged)
        prev_version, prev_value = champion_value(client, name, primary) if exists(client, name) else (None, None)
        copies = metrics.get("copy_fraction")
        decision = decide(value, prev_value, direction, cfg.min_improvement, half_width(metrics, primary),
                          float(copies) if isinstance(copies, int | float) else None, cfg.max_copy_fraction)
        promote, reason = decision.promote, decision.reason
        rule = {"margin": decision.margin, "interval_half_width": decision.half_width,
                "required_improvement": decision.required, "copy_fraction": copies,
                "max_copy_fraction": cfg.max_copy_fraction}
        tags = {**{f"genops.{k}": str(v) for k, v in lineage.items()}, **hash_tags([Path(f) for f in staged]),
                FINGERPRINT_TAG: fingerprint,
                **{f"metric.{k}": str(v) for k, v in metrics.items() if isinstance(v, int | float)},
                "genops.primary_metric": primary, "genops.promotion.decision": "champion" if promote else "challenger",
                "genops.promotion.reason": reason, "genops.promotion.champion_value": str(prev_value),
                "genops.promotion.previous_champion": str(prev_version),
                **{f"genops.promotion.{k}": str(v) for k, v in rule.items()}}
        if found is None:
            mv = mlflow.register_model(info.model_uri, name, tags=tags)
        else:  # made by an attempt that stopped before its alias was set: finish that version
            mv = found
            for k, v in tags.items():
                client.set_model_version_tag(name, mv.version, k, v)
        client.update_registered_model(name, description=f"{family_name}: {_summary(family_name)}")
        alias = "champion" if promote else "challenger"
        client.set_registered_model_alias(name, alias, mv.version)
        mlflow.set_tags({"genops.registered_version": mv.version, "genops.alias": alias})
    result = {"family": family_name, "model": name, "version": int(mv.version), "alias": alias,
              "primary_metric": primary, "candidate_value": value, "champion_value": prev_value,
              "previous_champion": prev_version, "reason": reason, **rule, **lineage}
    write_json_atomic(paths.registration(family_name), result)
    log.info("register %s: version %s -> @%s (%s)", name, mv.version, alias, reason)
    return result


def _summary(family: str) -> str:
    from genops.models.registry import family_class

    return family_class(family).info.summary

"""register: a new version of `genops-FAMILY` in the MLflow registry, promoted only if it is better.

The version holds the ONNX sampler (onnx flavor, signature, input example) and, as extra files,
the other graphs, the torch weights, family.json and a model card. Promotion compares the
family's primary metric with the current `@champion`'s (recorded on that version as a tag): the
candidate becomes `@champion` only if it beats it by `register.min_improvement` (a fraction of the
champion's value), else `@challenger`. The decision and both numbers are written to the version's
tags and to reports/registry/FAMILY.json.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from genops.bundle import FAMILY_JSON, WEIGHTS, read_meta
from genops.errors import GenopsError
from genops.fsutil import write_json_atomic
from genops.paths import ProjectPaths

log = logging.getLogger(__name__)

MODEL_PREFIX = "genops-"


def model_name(family: str) -> str:
    return f"{MODEL_PREFIX}{family}"


def decide(candidate: float, champion: float | None, direction: str, min_improvement: float) -> tuple[bool, str]:
    """Should the candidate replace the champion? Returns (promote, reason)."""
    if not math.isfinite(candidate):
        return False, f"candidate metric is {candidate}: never promoted"
    if champion is None or not math.isfinite(champion):
        return True, "no comparable champion"
    need = min_improvement * abs(champion)
    better = candidate < champion - need if direction == "min" else candidate > champion + need
    word = "lower" if direction == "min" else "higher"
    if better:
        return True, f"{candidate:.6g} is {word} than champion {champion:.6g} by more than {need:.3g}"
    return False, f"{candidate:.6g} is not {word} than champion {champion:.6g} by more than {need:.3g}"


def model_card(family: str, meta: dict, metrics: dict, export: dict, lineage: dict) -> str:
    from genops.models.registry import family_class

    info = family_class(family).info
    spec = meta["spec"]
    lines = [
        f"# {model_name(family)}", "", info.summary, "",
        f"**Samples by:** {info.samples_by}", "",
        "## Data",
        f"- source: `{lineage['data_source']}`, data hash `{lineage['data_hash']}`",
        f"- images: {spec['channels']} x {spec['height']} x {spec['width']}, "
        f"classes: {spec['num_classes'] or 'unlabeled'}", "",
        "## Lineage",
        f"- git commit `{lineage['git_commit']}`, params hash `{lineage['params_hash']}`, "
        f"MLflow run `{lineage['run_id']}`",
        *([f"- trained on base model `{lineage['base.model']}` version {lineage['base.version']} "
           f"(`{lineage['base.model_uri']}`, run `{lineage['base.run_id']}`)"] if "base.model" in lineage else []),
        "",
        "## Params", "```json", json.dumps(meta["cfg"], indent=2, sort_keys=True), "```", "",
        "## Metrics", "| metric | value |", "|---|---|",
        *[f"| {k} | {v:.6g} |" for k, v in sorted(metrics.items()) if isinstance(v, int | float)], "",
        "## Serving",
        f"- ONNX graphs: {', '.join(export['graphs'])} (opset {export['opset']}, dynamic batch); "
        f"torch/ORT max |diff| {max(g['max_abs_diff'] for g in export['graphs'].values()):.2g}",
        f"- `genops sample {family} --n 64 --out grid.png` (ONNX Runtime) or `--backend torch`",
        *([f"- the registered model is the first graph; sampling needs the loop outside the graphs ("
           f"{info.samples_by}): use `genops sample` or `family.sample(..., nets=ORT sessions)`"]
          if info.loop_outside_graph else []), "",
        "## Limits", *[f"- {item}" for item in info.limits], "",
    ]
    return "\n".join(lines)


def _champion_value(client, name: str, metric: str) -> tuple[str | None, float | None]:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None, None
    raw = mv.tags.get(f"metric.{metric}")
    return mv.version, (float(raw) if raw is not None else None)


def register_stage(family_name: str, params: dict, root: Path) -> dict:
    import mlflow
    import onnx
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from genops.serving.onnx_runtime import make_session
    from genops.stages.common import family_run, run_info
    from genops.tracking.store import git_commit

    paths = ProjectPaths(root)
    cfg = params.get("register", {})
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

    name = model_name(family_name)
    run_id = run_info(paths, family_name)["run_id"]
    lineage = {"git_commit": git_commit(root), "data_hash": spec_data["data_hash"],
               "data_source": spec_data["source"], "params_hash": meta.get("fingerprint", ""), "run_id": run_id}
    # A stacked family (latent diffusion) records the registered base model version it was trained on.
    lineage.update({f"base.{k}": v for k, v in (meta.get("base") or {}).items()})
    sampler = next(iter(export["graphs"]))
    with family_run(root, paths, family_name), tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        card = tmp / "MODEL_CARD.md"
        card.write_text(model_card(family_name, meta, metrics, export, lineage))
        extra = [card, ckpt / FAMILY_JSON, ckpt / WEIGHTS, exported / "export.json", paths.metrics(family_name)]
        extra += [exported / f"{g}.onnx" for g in export["graphs"]]
        for f in extra:  # copy next to the card so the names inside the model are stable
            if f.parent != tmp:
                shutil.copy(f, tmp / f.name)
        staged = [str(tmp / f.name) for f in extra]
        with np.load(exported / f"{sampler}.example.npz") as npz:
            example = {k: npz[k] for k in export["graphs"][sampler]["inputs"]}
        session = make_session(exported / f"{sampler}.onnx")
        out = session.run(None, example)[0]
        info = mlflow.onnx.log_model(
            onnx.load(str(exported / f"{sampler}.onnx")), name="model",
            signature=infer_signature(example, out), input_example=example,
            pip_requirements=["onnxruntime-gpu==1.31.1", f"onnx=={onnx.__version__}", "numpy"],
            onnx_execution_providers=export["providers"], save_as_external_data=False, extra_files=staged)
        client = MlflowClient()
        prev_version, prev_value = _champion_value(client, name, primary) if _exists(client, name) else (None, None)
        promote, reason = decide(value, prev_value, direction, float(cfg.get("min_improvement", 0.0)))
        tags = {**{f"genops.{k}": str(v) for k, v in lineage.items()},
                **{f"metric.{k}": str(v) for k, v in metrics.items() if isinstance(v, int | float)},
                "genops.primary_metric": primary, "genops.promotion.decision": "champion" if promote else "challenger",
                "genops.promotion.reason": reason, "genops.promotion.champion_value": str(prev_value),
                "genops.promotion.previous_champion": str(prev_version)}
        mv = mlflow.register_model(info.model_uri, name, tags=tags)
        client.update_registered_model(name, description=f"{family_name}: {_summary(family_name)}")
        alias = "champion" if promote else "challenger"
        client.set_registered_model_alias(name, alias, mv.version)
        mlflow.set_tags({"genops.registered_version": mv.version, "genops.alias": alias})
    result = {"family": family_name, "model": name, "version": int(mv.version), "alias": alias,
              "primary_metric": primary, "candidate_value": value, "champion_value": prev_value,
              "previous_champion": prev_version, "reason": reason, **lineage}
    write_json_atomic(paths.registration(family_name), result)
    log.info("register %s: version %s -> @%s (%s)", name, mv.version, alias, reason)
    return result


def _exists(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def _summary(family: str) -> str:
    from genops.models.registry import family_class

    return family_class(family).info.summary

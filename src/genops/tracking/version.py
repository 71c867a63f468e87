"""The pieces of registering a version, in the order the register stage runs them: what the earlier stages left
(checked), the version's lineage, its bundle folder, the promotion decision, its tags, the MLflow calls that make
or finish the version, and the descriptions the registry shows."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from genops.config.sections import RegisterConfig, ServingConfig
from genops.errors import GenopsError
from genops.serving.environment import code_digest, copy_code, serving_requirements
from genops.storage.bundle import FAMILY_JSON, REGISTRY_BUNDLE, WEIGHTS, read_meta
from genops.storage.integrity import record_hashes, verify_recorded
from genops.storage.paths import ProjectPaths
from genops.tracking.logged_model import evaluation_dataset, link_metrics, log_generator
from genops.tracking.model_card import fit_description, model_card, registry_card
from genops.tracking.model_registry import FINGERPRINT_TAG, champion_value, exists, hash_tags
from genops.tracking.promotion import decide, half_width
from genops.tracking.store import context_tags, git_commit
from genops.versioning.dvc import out_hashes

VERSION_HEADER = "**Version {}** (decided at registration: @{})"


@dataclass(frozen=True)
class Candidate:
    """What the earlier stages left for one family: its metrics, export record, checkpoint metadata, data spec."""

    family: str
    metrics: dict
    export: dict
    meta: dict
    spec: dict
    floor: dict  # the evaluator's own metrics (the real-data floor), {} without one

    @property
    def primary(self) -> str:
        return self.metrics["primary_metric"]

    @property
    def value(self) -> float:
        return float(self.metrics.get(self.primary, float("nan")))

    def numeric_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.metrics.items() if isinstance(v, int | float) and math.isfinite(v)}


def read_candidate(paths: ProjectPaths, family: str) -> Candidate:
    """The candidate's files, refused when one is missing, its primary metric is not finite, or its checkpoint was
    trained on other data than data/prepared."""
    ckpt, exported = paths.checkpoint(family), paths.exported(family)
    for needed in (paths.metrics(family), exported / "export.json", ckpt / FAMILY_JSON):
        if not needed.is_file():
            raise GenopsError(f"{needed} is missing: run the earlier stages for {family} first")
    floor = json.loads(paths.evaluator_metrics.read_text()) if paths.evaluator_metrics.is_file() else {}
    candidate = Candidate(family, json.loads(paths.metrics(family).read_text()),
                          json.loads((exported / "export.json").read_text()), read_meta(ckpt),
                          json.loads((paths.prepared / "spec.json").read_text()), floor)
    if not math.isfinite(candidate.value):
        raise GenopsError(f"metrics/{family}.json: primary metric {candidate.primary}={candidate.value}; "
                          "not registering")
    if candidate.meta.get("data_hash") != candidate.spec["data_hash"]:
        raise GenopsError(f"{ckpt} was trained on other data than data/prepared; re-run training")
    return candidate


def lineage(root: Path, candidate: Candidate, run_id: str) -> dict:
    """Where the version comes from: commit, data hash and source, params fingerprint, run, context, the base
    version of a stacked family, extra data sources, and the DVC hashes of its checkpoint and graphs."""
    family, meta, spec = candidate.family, candidate.meta, candidate.spec
    out = {"family": family, "git_commit": git_commit(root), "data_hash": spec["data_hash"],
           **{k.removeprefix("genops."): v for k, v in context_tags().items()},
           "data_source": spec["source"], "params_hash": meta.get("fingerprint", ""), "run_id": run_id}
    out.update({f"base.{k}": v for k, v in (meta.get("base") or {}).items()})
    out.update({f"data.{role}.{k}": v for role, d in (meta.get("domains") or {}).items() for k, v in d.items()})
    hashes = out_hashes(root)  # dvc.lock has them once those stages are recorded
    out.update({k: hashes[p] for k, p in (("dvc.checkpoint", f"checkpoints/{family}"),
                                           ("dvc.exported", f"exported/{family}")) if hashes.get(p)})
    return out


def stage_bundle(tmp: Path, paths: ProjectPaths, candidate: Candidate) -> list[Path]:
    """The version's files copied into tmp/REGISTRY_BUNDLE (stable names inside the model), graphs verified
    against their recorded hashes first; returns the copies."""
    ckpt, exported = paths.checkpoint(candidate.family), paths.exported(candidate.family)
    graphs = [f"{g}.onnx" for g in candidate.export["graphs"]]
    verify_recorded(exported, graphs, "re-run `genops export`")
    bundle = tmp / REGISTRY_BUNDLE
    bundle.mkdir()
    files = [ckpt / FAMILY_JSON, ckpt / WEIGHTS, exported / "export.json", paths.metrics(candidate.family),
             *[exported / g for g in graphs]]
    for f in files:
        shutil.copy(f, bundle / f.name)
    return [bundle / f.name for f in files]


@dataclass(frozen=True)
class Promotion:
    alias: str
    reason: str
    promote: bool
    previous: str | None  # the champion's version before this one
    previous_value: float | None
    rule: dict  # margin, interval half-width, improvement required, copy fraction and its limit

    def outcome(self) -> dict:
        return {"alias": self.alias, "reason": self.reason, "previous_champion": self.previous,
                "champion_value": self.previous_value}


def promotion(client: MlflowClient, name: str, candidate: Candidate, cfg: RegisterConfig) -> Promotion:
    """@champion if the candidate beats the champion by the margin and its own interval, and copies little; else
    @challenger (genops.tracking.promotion.decide)."""
    metrics, primary = candidate.metrics, candidate.primary
    prev_version, prev_value = champion_value(client, name, primary) if exists(client, name) else (None, None)
    copies = metrics.get("copy_fraction")
    decision = decide(candidate.value, prev_value, metrics["primary_direction"], cfg.min_improvement,
                      half_width(metrics, primary), float(copies) if isinstance(copies, int | float) else None,
                      cfg.max_copy_fraction)
    rule = {"margin": decision.margin, "interval_half_width": decision.half_width,
            "required_improvement": decision.required, "copy_fraction": copies,
            "max_copy_fraction": cfg.max_copy_fraction}
    return Promotion("champion" if decision.promote else "challenger", decision.reason, decision.promote,
                     prev_version, prev_value, rule)


def write_card_and_hashes(files: list[Path], name: str, candidate: Candidate, lineage: dict,
                          decision: Promotion) -> str:
    """MODEL_CARD.md and hashes.json (what the generator checks before loading anything) into the bundle; returns
    the compact card the registry's descriptions show."""
    bundle = files[0].parent
    args = (candidate.family, name, candidate.meta, candidate.metrics, candidate.export, lineage, candidate.floor,
            decision.outcome())
    (bundle / "MODEL_CARD.md").write_text(model_card(*args))
    record_hashes(bundle, [f.name for f in files])
    return model_card(*args, compact=True)


def version_tags(files: list[Path], lineage: dict, fingerprint: str, candidate: Candidate,
                 decision: Promotion) -> dict[str, str]:
    bundle = files[0].parent
    return {**{f"genops.{k}": str(v) for k, v in lineage.items()},
            **hash_tags(files + [bundle / "MODEL_CARD.md", bundle / "hashes.json"]),
            FINGERPRINT_TAG: fingerprint,
            **{f"metric.{k}": str(v) for k, v in candidate.metrics.items() if isinstance(v, int | float)},
            "genops.primary_metric": candidate.primary, "genops.promotion.decision": decision.alias,
            "genops.promotion.reason": decision.reason, "genops.promotion.champion_value": str(decision.previous_value),
            "genops.promotion.previous_champion": str(decision.previous),
            **{f"genops.promotion.{k}": str(v) for k, v in decision.rule.items()}}


def new_version(tmp: Path, files: list[Path], name: str, candidate: Candidate, tags: dict[str, str],
                serving: ServingConfig, paths: ProjectPaths):
    """Log the bundle as a pyfunc generator carrying genops' code and its serving requirements, link the metrics
    to its LoggedModel and the evaluation dataset, and register it; returns the ModelVersion."""
    code = copy_code(tmp / "code")
    tags = {**tags, "genops.serving.requirements": serving.requirements,
            "genops.serving.code_sha256": code_digest(code)}
    info = log_generator(files[0].parent, candidate.family, bool(candidate.meta["cfg"].get("conditional")),
                         serving_requirements(serving.requirements), code,
                         {"max_images": serving.max_images, "max_work": serving.max_work})
    link_metrics(info.model_id, candidate.numeric_metrics(), evaluation_dataset(paths.prepared, candidate.spec))
    return mlflow.register_model(info.model_uri, name, tags=tags)


def finish_version(client: MlflowClient, name: str, version, tags: dict[str, str]) -> None:
    """Tag a version an earlier attempt made but did not finish (stopped before its alias was set)."""
    for k, v in tags.items():
        client.set_model_version_tag(name, version.version, k, v)


def describe_and_alias(client: MlflowClient, name: str, family: str, version, decision: Promotion,
                       short_card: str) -> None:
    """The version's and the registered model's descriptions (the champion's card), then the alias."""
    client.update_model_version(name, version.version, description=fit_description(
        f"{VERSION_HEADER.format(version.version, decision.alias)}\n\n{short_card}"))
    champion_card = short_card if decision.promote else stored_card(client, name, decision.previous)
    client.update_registered_model(name, description=fit_description(registry_card(
        family, name, version.version if decision.promote else decision.previous, champion_card)))
    client.set_registered_model_alias(name, decision.alias, version.version)
    mlflow.set_tags({"genops.registered_version": version.version, "genops.alias": decision.alias})


def stored_card(client: MlflowClient, name: str, version) -> str | None:
    """The model card a version was registered with (its description, without the version header)."""
    if version is None:
        return None
    description = client.get_model_version(name, version).description or ""
    return description.split("\n\n", 1)[1] if description.startswith("**Version") else description or None

"""train: fit one family on the prepared training split, logging everything to MLflow."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from genops.config import params_hash
from genops.data.spec import DataSpec
from genops.data.tensors import load_split
from genops.fsutil import atomic_dir, write_json_atomic
from genops.models.registry import build_family
from genops.paths import ProjectPaths
from genops.stages.common import require_validated

log = logging.getLogger(__name__)


@dataclass
class TrainStageResult:
    family: str
    run_id: str
    steps: int
    final_loss: float
    images_per_s: float
    wall_s: float
    resumed_from: int


def train_stage(family_name: str, params: dict, root: Path) -> TrainStageResult:
    import mlflow

    from genops.evaluation.plots import save_loss_curve
    from genops.tracking.store import flatten, git_commit, setup_mlflow
    from genops.training.device import seed_everything, select_device
    from genops.training.loop import TrainConfig, train

    paths = ProjectPaths(root)
    spec_data = require_validated(paths)
    spec = DataSpec.from_dict(spec_data)
    seed = int(params.get("seed", 0))
    train_params = params.get("train", {})
    seed_everything(seed, train_params.get("num_threads"))
    device = select_device(str(train_params.get("device", "auto")))
    family = build_family(family_name, params, spec)
    cfg = TrainConfig.from_params(train_params, seed)
    cfg.progress = bool(train_params.get("progress", True))
    # Families whose step is cheaper (a WGAN critic step) may ask for proportionally more of them.
    cfg.steps = max(1, round(cfg.steps * float(params[family_name].get("steps_scale", 1.0))))
    base = None
    if family.base_family:
        from genops.stages.base_model import attach_registered_base, check_stacked

        check_stacked(family_name, family.base_family, params)
        base = attach_registered_base(family, params[family_name], root, device, spec_data["data_hash"])
    # The code is part of the fingerprint: a changed model or loop never resumes an old checkpoint.
    # A family's `evaluate:` budget does not change the model: editing it must not retrain.
    model_cfg = {k: v for k, v in params[family_name].items() if k != "evaluate"}
    fingerprint = params_hash({"family": family_name, "cfg": model_cfg, "train": train_params,
                               "seed": seed, "data": spec_data["data_hash"], "code": code_hash(family_name),
                               **({"base": [base["model"], base["version"], base["fingerprint"]]} if base else {})})
    done = _up_to_date(paths, family_name, fingerprint)
    if done is not None:
        return done
    data = load_split(paths.prepared, "train")
    log.info("train %s: %d params, %d images, %d steps on %s", family_name, family.num_parameters(),
             len(data), cfg.steps, device)

    setup_mlflow(root)
    with mlflow.start_run(run_name=family_name) as run:
        mlflow.set_tags({"genops.family": family_name, "genops.git_commit": git_commit(root),
                         "genops.data_hash": spec_data["data_hash"], "genops.params_hash": fingerprint,
                         "genops.device": str(device),
                         **{f"genops.base.{k}": v for k, v in (base or {}).items()}})
        mlflow.log_params(flatten({"family": params[family_name], "train": train_params, "seed": seed,
                                   "data": params.get("data", {})}))
        _log_dataset(paths, spec_data)
        monitor = _collapse_monitor(paths, family, params[family_name], train_params)
        every = int(params[family_name].get("monitor_every", train_params.get("monitor_every", 0)) or 0)

        def on_log(step: int, losses: dict[str, float]) -> None:
            mlflow.log_metrics(losses, step=step)
            if monitor and (step % every == 0 or step == cfg.steps):
                mlflow.log_metrics(monitor(step), step=step)

        family.to(device)
        family.on_train_start(data, cfg.batch_size * 2)
        result = train(family, data, cfg, paths.work(family_name), fingerprint, device, on_log=on_log)
        family.on_train_end(data, cfg.batch_size * 2)
        mlflow.log_metrics({"train_images_per_s": result.images_per_s, "train_wall_s": result.wall_s,
                            "num_parameters": family.num_parameters()})
        with atomic_dir(paths.checkpoint(family_name)) as out:
            from genops.bundle import save_bundle

            save_bundle(out, family, {"fingerprint": fingerprint, "data_hash": spec_data["data_hash"],
                                      "seed": seed, **({"base": base} if base else {})})
            _write_history(out / "history.csv", result.history)
            write_json_atomic(out / "run.json", {"run_id": run.info.run_id,
                                                 "experiment_id": run.info.experiment_id})
            write_json_atomic(out / "train.json", {"steps": result.steps, "wall_s": round(result.wall_s, 3),
                                                   "images_per_s": round(result.images_per_s, 2),
                                                   "resumed_from": result.resumed_from,
                                                   "num_parameters": family.num_parameters(),
                                                   "device": str(device), "base": base,
                                                   "warnings": monitor.warnings if monitor else []})
        curve = save_loss_curve(result.history, paths.report(family_name) / "train" / "loss_curve.png",
                                f"{family_name} training losses")
        mlflow.log_artifact(str(curve), artifact_path="plots")
    final = result.history[-1].get("loss", float("nan")) if result.history else float("nan")
    return TrainStageResult(family_name, run.info.run_id, result.steps, final, result.images_per_s,
                            result.wall_s, result.resumed_from)


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    keys = list(history[0]) if history else ["step"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def _log_dataset(paths: ProjectPaths, spec_data: dict) -> None:
    """Record the training split as an MLflow dataset input (name, digest, source)."""
    import mlflow
    import numpy as np

    with np.load(paths.prepared / "train.npz") as npz:
        ds = mlflow.data.from_numpy(npz["images"], targets=npz["labels"], source=str(paths.prepared),
                                    name=f"{spec_data['source']}@{spec_data['data_hash']}")
    mlflow.log_input(ds, context="training")


def code_hash(family_name: str) -> str:
    """Hash of the code that decides what a checkpoint of this family means: the family's module and
    the genops.models modules it imports (followed statically), plus the training loop."""
    import ast
    import hashlib
    import importlib.util

    import genops.training
    from genops.models.registry import FAMILIES

    def source(module: str) -> Path:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, module
        return Path(spec.origin)

    todo, seen = [FAMILIES[family_name].split(":")[0]], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for node in ast.walk(ast.parse(source(module).read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            todo += [n for n in names if n.startswith("genops.models.")]
    files = [source(m) for m in sorted(seen)] + sorted(Path(genops.training.__file__).parent.glob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _up_to_date(paths: ProjectPaths, family_name: str, fingerprint: str) -> TrainStageResult | None:
    """The finished checkpoint of exactly these params, data and code, if it is already in place.

    DVC re-runs `train` whenever anything under src/genops/models changes (it cannot tell families
    apart); this keeps such a re-run from retraining, or even rewriting, an unaffected family."""
    import json

    from genops.bundle import FAMILY_JSON, WEIGHTS

    folder = paths.checkpoint(family_name)
    needed = [folder / n for n in (FAMILY_JSON, WEIGHTS, "run.json", "train.json", "history.csv")]
    if not all(p.is_file() for p in needed):
        return None
    if json.loads((folder / FAMILY_JSON).read_text()).get("fingerprint") != fingerprint:
        return None
    info, run = json.loads((folder / "train.json").read_text()), json.loads((folder / "run.json").read_text())
    log.info("train %s: checkpoint already matches these params, data and code; nothing to train", family_name)
    return TrainStageResult(family_name, run["run_id"], info["steps"], float("nan"), info["images_per_s"],
                            info["wall_s"], info.get("resumed_from", 0))


def _collapse_monitor(paths: ProjectPaths, family, cfg: dict, train_params: dict):
    """A CollapseMonitor in evaluator features when `monitor_every` > 0, else None."""
    every = int(cfg.get("monitor_every", train_params.get("monitor_every", 0)) or 0)
    if every <= 0:
        return None
    from genops.data.tensors import load_split
    from genops.stages.evaluator import features_and_probs, load_evaluator, reference_subset
    from genops.training.monitor import CollapseMonitor

    net, meta = load_evaluator(paths)
    labeled = meta["kind"] == "classifier"
    reference = reference_subset(load_split(paths.prepared, "train"), int(cfg.get("monitor_samples", 256)), 7)
    return CollapseMonitor(family, lambda x: features_and_probs(net, x, labeled),
                           features_and_probs(net, reference, labeled)[0],
                           n_samples=int(cfg.get("monitor_samples", 256)),
                           min_recall=float(cfg.get("collapse_min_recall", 0.05)),
                           min_modes=int(cfg.get("collapse_min_modes", max(1, meta["num_classes"] // 2))))

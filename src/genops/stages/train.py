"""train: fit one family on the prepared training split, logging everything to MLflow."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml

from genops.config import FAMILIES, FamilyConfig, Params, StackedConfig, dump
from genops.data.domains import attach_domains
from genops.data.spec import DataSpec
from genops.data.tensors import ImageSet, load_split
from genops.errors import GenopsError
from genops.evaluation.features import features_and_probs, load_evaluator, reference_subset
from genops.evaluation.history import read_history
from genops.evaluation.train_report import LOSSES_CSV, write_train_report
from genops.models.capabilities import FitsData, Monitored
from genops.models.family import Family
from genops.models.registry import family_class, instantiate
from genops.storage.bundle import family_meta
from genops.storage.paths import ProjectPaths
from genops.tracking.stacking import resolve_base
from genops.tracking.store import setup_mlflow
from genops.tracking.training_run import log_training_inputs, training_tags
from genops.training.budget import StepBudget, plan_budget
from genops.training.device import seed_everything
from genops.training.distributed import die_with_parent, launched_by_torchrun, process_group, torchrun_command
from genops.training.fingerprint import training_fingerprint
from genops.training.loop import LoopSettings, TrainResult, train
from genops.training.monitor import CollapseMonitor
from genops.training.outputs import (
    HISTORY,
    RUN_JSON,
    SNAPSHOTS,
    TRAIN_JSON,
    checkpoint_up_to_date,
    save_snapshot,
    snapshot_name,
    snapshot_steps,
    write_checkpoint,
)
from genops.validation.gate import require_validated

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


def train_stage(family_name: str, params: Params, root: Path) -> TrainStageResult:
    """Train one family. With train.distributed.nproc above 1 this relaunches itself under torchrun, and every
    rank runs it again inside torchrun's process group (rank 0 tracks and writes)."""
    with process_group(params.train.device) as (shard, device):
        return _train(family_name, params, root, shard, device)


def _train(family_name: str, params: Params, root: Path, shard, device) -> TrainStageResult:
    paths, tcfg = ProjectPaths(root), params.train
    plan = _plan(family_name, params, paths, device)
    family, folder = plan.family, paths.checkpoint(family_name)
    if not launched_by_torchrun() and checkpoint_up_to_date(folder, family_meta(family, plan.extra)):
        if not (paths.report(family_name) / "train" / LOSSES_CSV).is_file():  # `dvc repro` clears outputs
            write_train_report(paths.report(family_name) / "train", family_name, read_history(folder / HISTORY),
                               family.monitor_loss)
        return _stored_result(folder, family_name, float("nan"))
    if tcfg.distributed.world_size > 1 and not launched_by_torchrun():
        return _run_ranks(family_name, params, paths)
    data = load_split(paths.prepared, "train", params.data.in_memory_max_mb)
    family.to(device)
    if isinstance(family, FitsData):
        family.on_train_start(data, tcfg.batch_size * 2)
    budget = plan_budget(family, plan.cfg.steps, tcfg.steps, tcfg.budget, data, tcfg.batch_size,
                         plan.cfg.learning_rate(tcfg.lr), device, params.seed)
    loop = _loop_settings(plan.cfg, params, budget)
    _log_plan(family, data, budget, device, shard)
    if not shard.is_main:  # the other ranks compute and reduce; rank 0 alone tracks and writes
        return _result(family_name, "", train(family, data, loop, paths.work(family_name), plan.fingerprint, device,
                                              shard=shard), family)
    return _train_tracked(family_name, params, paths, plan, data, budget, loop, shard, device)


def _train_tracked(family_name: str, params: Params, paths: ProjectPaths, plan: _Plan, data: ImageSet,
                   budget: StepBudget, loop: LoopSettings, shard, device) -> TrainStageResult:
    """Rank 0's run: tracked in MLflow, snapshots and the finished checkpoint written, the loss report drawn."""
    root, tcfg, family, folder = paths.root, params.train, plan.family, paths.checkpoint(family_name)
    setup_mlflow(root, params.tracking.experiment)
    if params.tracking.system_metrics:
        mlflow.set_system_metrics_sampling_interval(params.tracking.system_metrics_interval_s)
    with mlflow.start_run(run_name=family_name, log_system_metrics=params.tracking.system_metrics) as run:
        tags = training_tags(root, family_name, plan.spec_data["data_hash"], plan.fingerprint, str(device),
                             shard.world, plan.lineage, plan.domains)
        log_training_inputs(tags, plan.cfg, params, budget, paths.prepared, plan.spec_data, data.mapped)
        monitor = _collapse_monitor(paths, family, data)
        fit_set = data.subset(tcfg.fit_images, params.seed)  # what the end-of-training fits see
        snapshots = paths.work(family_name) / SNAPSHOTS
        result = train(family, data, loop, paths.work(family_name), plan.fingerprint, device, shard=shard,
                       on_log=_metric_logger(monitor, loop.steps),
                       on_snapshot=lambda step: save_snapshot(snapshots / snapshot_name(step), family, fit_set,
                                                              loop.batch_size * 2,
                                                              {**plan.extra, "snapshot_step": step}))
        if isinstance(family, FitsData):
            family.on_train_end(fit_set, loop.batch_size * 2)
        mlflow.log_metrics({"train_images_per_s": result.images_per_s, "train_wall_s": result.wall_s,
                            "num_parameters": family.num_parameters()})
        write_checkpoint(folder, family, plan.extra, snapshots, loop.snapshots, result.history,
                         {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id},
                         _train_facts(result, family, device, shard.world, budget, plan.lineage, monitor))
        curve = write_train_report(paths.report(family_name) / "train", family_name, result.history,
                                   family.monitor_loss)
        mlflow.log_artifact(str(curve), artifact_path="plots")
    return _result(family_name, run.info.run_id, result, family)


@dataclass
class _Plan:
    """What train needs before it reads data: the family built (on its base model), its extra data, fingerprint."""

    family: Family
    cfg: FamilyConfig
    spec_data: dict
    seed: int
    fingerprint: str
    lineage: dict | None
    domains: dict[str, dict]

    @property
    def extra(self) -> dict:
        """What the bundle's family.json stores beside the family's own settings."""
        return {"fingerprint": self.fingerprint, "data_hash": self.spec_data["data_hash"],
                "seed": self.seed,
                **({"base": self.lineage} if self.lineage else {}),
                **({"domains": self.domains} if self.domains else {})}


def _plan(family_name: str, params: Params, paths: ProjectPaths, device) -> _Plan:
    """Build the family (seeded; on its registered base model where it has one) and fingerprint the run."""
    spec_data = require_validated(paths)
    cfg, tcfg = params.family(family_name), params.train
    seed_everything(params.seed, tcfg.num_threads)
    base, lineage = None, None
    if FAMILIES[family_name].base:
        assert isinstance(cfg, StackedConfig)
        base, lineage = resolve_base(family_name, cfg, paths.root, device, spec_data["data_hash"],
                                     params.tracking.model_prefix)
        seed_everything(params.seed, tcfg.num_threads)  # the family's init must not depend on loading the base
    family = instantiate(family_name, cfg, DataSpec.from_dict(spec_data), base)
    # Extra data sources the family's config names (CycleGAN's domain B), in the main data's shape.
    domains = attach_domains(family, cfg.data_sources(), paths.root, params.seed, params.data.test_fraction)
    fingerprint = training_fingerprint(family_name, cfg, tcfg, params.seed, spec_data["data_hash"], lineage,
                                       domains={role: d["hash"] for role, d in domains.items()})
    return _Plan(family, cfg, spec_data, params.seed, fingerprint, lineage, domains)


def _loop_settings(cfg: FamilyConfig, params: Params, budget: StepBudget) -> LoopSettings:
    tcfg = params.train
    return LoopSettings(steps=budget.steps, batch_size=tcfg.batch_size, lr=cfg.learning_rate(tcfg.lr),
                        checkpoint_every=tcfg.checkpoint_every, log_every=tcfg.log_every, seed=params.seed,
                        max_loss=tcfg.max_loss, progress=tcfg.progress, compile=tcfg.compile,
                        channels_last=tcfg.channels_last, snapshots=snapshot_steps(tcfg.snapshots, budget.steps))


def _log_plan(family: Family, data: ImageSet, budget: StepBudget, device, shard) -> None:
    log.info("train %s: %d params, %d images%s, %d steps (%s; %.3g FLOPs per step, %.3g in all) on %s%s",
             family.name, family.num_parameters(), len(data), " (memory-mapped)" if data.mapped else "",
             budget.steps, budget.source, budget.flops_per_step, budget.total_flops, device,
             f" (rank {shard.rank} of {shard.world})" if shard.active else "")


def _metric_logger(monitor: CollapseMonitor | None, last_step: int):
    """The loop's on_log: the losses, and the collapse monitor's readings at its cadence and at the end."""
    def on_log(step: int, losses: dict[str, float]) -> None:
        mlflow.log_metrics(losses, step=step)
        if monitor and (step % monitor.every == 0 or step == last_step):
            mlflow.log_metrics(monitor(step), step=step)
    return on_log


def _train_facts(result: TrainResult, family: Family, device, processes: int, budget: StepBudget,
                 lineage: dict | None, monitor: CollapseMonitor | None) -> dict:
    """train.json: what the run did, read by evaluate (speed, budget, warnings) and by a re-run."""
    return {"steps": result.steps, "wall_s": round(result.wall_s, 3), "images_per_s": round(result.images_per_s, 2),
            "resumed_from": result.resumed_from, "num_parameters": family.num_parameters(), "device": str(device),
            "processes": processes, "budget": budget.as_dict(), "base": lineage,
            "warnings": monitor.warnings if monitor else []}


def _result(family_name: str, run_id: str, result: TrainResult, family: Family) -> TrainStageResult:
    return TrainStageResult(family_name, run_id, result.steps, _final_loss(result.history, family.monitor_loss),
                            result.images_per_s, result.wall_s, result.resumed_from)


def _run_ranks(family_name: str, params: Params, paths: ProjectPaths) -> TrainStageResult:
    """`genops train FAMILY` under torchrun with exactly these params (overrides included), then its result."""
    dcfg = params.train.distributed
    work = paths.work(family_name)
    work.mkdir(parents=True, exist_ok=True)
    resolved = work / "torchrun-params.yaml"
    resolved.write_text(yaml.safe_dump(dump(params), sort_keys=False))
    cmd = torchrun_command(dcfg, ["train", family_name])
    log.info("train %s: %d processes x %d machine(s) through torchrun: %s", family_name, dcfg.nproc, dcfg.nnodes,
             " ".join(cmd[1:]))
    env = {**os.environ, "GENOPS_ROOT": str(paths.root), "GENOPS_PARAMS_FILE": str(resolved)}
    # torchrun dies with this process (a killed stage must not leave ranks training beside its rerun). The ranks'
    # logs and progress go to stderr; their stdout holds only each rank's result, which this stage reports once.
    code = subprocess.run(cmd, cwd=paths.root, env=env, stdout=subprocess.DEVNULL,
                          preexec_fn=die_with_parent).returncode  # noqa: PLW1509
    if code != 0:
        raise GenopsError(f"train {family_name}: torchrun with {dcfg.world_size} processes failed (exit code {code}); "
                          "the ranks' errors are above. A rerun resumes from the last checkpoint.")
    folder = paths.checkpoint(family_name)
    if not (folder / TRAIN_JSON).is_file():
        raise GenopsError(f"train {family_name}: torchrun finished but rank 0 wrote no {folder / TRAIN_JSON}")
    history = read_history(folder / HISTORY)
    return _stored_result(folder, family_name, _final_loss(history, family_class(family_name).monitor_loss))


def _final_loss(history: list[dict], key: str) -> float:
    """The last logged value of the family's own loss (`Family.monitor_loss`: a GAN's is loss_d, not "loss")."""
    return float(history[-1].get(key, float("nan"))) if history else float("nan")


def _stored_result(folder: Path, family_name: str, final_loss: float) -> TrainStageResult:
    """The result of the finished run whose train.json and run.json are in `folder`."""
    info, run = json.loads((folder / TRAIN_JSON).read_text()), json.loads((folder / RUN_JSON).read_text())
    return TrainStageResult(family_name, run["run_id"], info["steps"], final_loss, info["images_per_s"],
                            info["wall_s"], info.get("resumed_from", 0))


def _collapse_monitor(paths: ProjectPaths, family: Family, train_set: ImageSet) -> CollapseMonitor | None:
    """A CollapseMonitor in evaluator features when the family asks for one, else None."""
    settings = family.monitor_settings() if isinstance(family, Monitored) else None
    if settings is None:
        return None
    net, meta = load_evaluator(paths)
    labeled = meta["kind"] == "classifier"
    reference = reference_subset(train_set, settings.samples, 7)
    return CollapseMonitor(family, lambda x: features_and_probs(net, x, labeled),
                           features_and_probs(net, reference, labeled)[0], every=settings.every,
                           n_samples=settings.samples, min_recall=settings.min_recall, min_modes=settings.min_modes)

"""train: fit one family on the prepared training split, logging everything to MLflow."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from genops.config import FAMILIES, Params, StackedConfig
from genops.data.spec import DataSpec
from genops.data.tensors import load_split
from genops.models.capabilities import FitsData, Monitored, Phased
from genops.storage.atomic import atomic_dir, write_json_atomic
from genops.storage.bundle import FAMILY_JSON, WEIGHTS, family_meta, read_meta, save_bundle, write_meta
from genops.storage.paths import ProjectPaths
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
    from genops.training.distributed import process_group

    with process_group(params.train.device) as (shard, device):
        return _train(family_name, params, root, shard, device)


def _train(family_name: str, params: Params, root: Path, shard, device) -> TrainStageResult:
    import mlflow

    from genops.data.domains import attach_domains
    from genops.evaluation.history import read_history, write_history
    from genops.models.registry import instantiate
    from genops.tracking.store import context_tags, flatten, git_commit, setup_mlflow
    from genops.training.device import seed_everything
    from genops.training.distributed import launched_by_torchrun
    from genops.training.fingerprint import training_fingerprint
    from genops.training.loop import LoopSettings, train

    paths = ProjectPaths(root)
    spec_data = require_validated(paths)
    spec = DataSpec.from_dict(spec_data)
    cfg, tcfg = params.family(family_name), params.train
    seed_everything(params.seed, tcfg.num_threads)
    base, lineage = None, None
    if FAMILIES[family_name].base:
        from genops.tracking.base_model import resolve_base

        assert isinstance(cfg, StackedConfig)
        base, lineage = resolve_base(family_name, cfg, root, device, spec_data["data_hash"],
                                      params.tracking.model_prefix)
        seed_everything(params.seed, tcfg.num_threads)  # the family's init must not depend on loading the base
    family = instantiate(family_name, cfg, spec, base)
    # Extra data sources the family's config names (CycleGAN's domain B), in the main data's shape.
    domains = attach_domains(family, cfg.data_sources(), root, params.seed, params.data.test_fraction)
    fingerprint = training_fingerprint(family_name, cfg, tcfg, params.seed, spec_data["data_hash"], lineage,
                                       domains={role: d["hash"] for role, d in domains.items()})
    extra = {"fingerprint": fingerprint, "data_hash": spec_data["data_hash"], "seed": params.seed,
             **({"base": lineage} if lineage else {}), **({"domains": domains} if domains else {})}
    done = None if launched_by_torchrun() else _up_to_date(paths, family_name, family_meta(family, extra))
    if done is not None:
        if not (paths.report(family_name) / "train" / LOSSES_CSV).is_file():  # `dvc repro` clears outputs
            _write_train_report(paths, family_name, read_history(paths.checkpoint(family_name) / "history.csv"),
                                family.monitor_loss)
        return done
    if tcfg.distributed.world_size > 1 and not launched_by_torchrun():
        return _run_ranks(family_name, params, paths)
    data = load_split(paths.prepared, "train", params.data.in_memory_max_mb)
    family.to(device)
    if isinstance(family, FitsData):
        family.on_train_start(data, tcfg.batch_size * 2)
    budget = _budget(family, cfg, tcfg, data, device, params.seed)
    loop = LoopSettings(steps=budget.steps, batch_size=tcfg.batch_size, lr=cfg.learning_rate(tcfg.lr),
                        checkpoint_every=tcfg.checkpoint_every, log_every=tcfg.log_every, seed=params.seed,
                        max_loss=tcfg.max_loss, progress=tcfg.progress, compile=tcfg.compile,
                        channels_last=tcfg.channels_last,
                        snapshots=snapshot_steps(tcfg.snapshots, budget.steps))
    log.info("train %s: %d params, %d images%s, %d steps (%s; %.3g FLOPs per step, %.3g in all) on %s%s",
             family_name, family.num_parameters(), len(data), " (memory-mapped)" if data.mapped else "",
             budget.steps, budget.source, budget.flops_per_step, budget.total_flops, device,
             f" (rank {shard.rank} of {shard.world})" if shard.active else "")
    if not shard.is_main:  # the other ranks compute and reduce; rank 0 alone tracks and writes
        result = train(family, data, loop, paths.work(family_name), fingerprint, device, shard=shard)
        return TrainStageResult(family_name, "", result.steps, _final_loss(result.history, family.monitor_loss),
                                result.images_per_s, result.wall_s, result.resumed_from)

    setup_mlflow(root, params.tracking.experiment)
    if params.tracking.system_metrics:
        mlflow.set_system_metrics_sampling_interval(params.tracking.system_metrics_interval_s)
    with mlflow.start_run(run_name=family_name, log_system_metrics=params.tracking.system_metrics) as run:
        mlflow.set_tags({"genops.family": family_name, "genops.git_commit": git_commit(root),
                         "genops.data_hash": spec_data["data_hash"], "genops.params_hash": fingerprint,
                         "genops.device": str(device), "genops.train.processes": str(shard.world),
                         **context_tags(),
                         **{f"genops.base.{k}": v for k, v in (lineage or {}).items()},
                         **{f"genops.data.{role}.{k}": v for role, d in domains.items() for k, v in d.items()}})
        mlflow.log_params(flatten({"family": cfg.model_dump(mode="json", by_alias=True),
                                   "train": tcfg.model_dump(mode="json"), "seed": params.seed,
                                   "data": params.data.model_dump(mode="json"),
                                   "budget": {"steps": budget.steps, "source": budget.source}}))
        mlflow.log_metrics({"train_flops_per_step": budget.flops_per_step, "train_flops": budget.total_flops})
        _log_dataset(paths, spec_data, data.mapped)
        monitor = _collapse_monitor(paths, family, data)
        every = monitor.every if monitor else 0

        def on_log(step: int, losses: dict[str, float]) -> None:
            mlflow.log_metrics(losses, step=step)
            if monitor and (step % every == 0 or step == loop.steps):
                mlflow.log_metrics(monitor(step), step=step)

        snapshots = paths.work(family_name) / SNAPSHOTS

        fit_set = data.subset(tcfg.fit_images, params.seed)  # what the end-of-training fits see

        def on_snapshot(step: int) -> None:
            _save_snapshot(snapshots / snapshot_name(step), family, fit_set, loop.batch_size * 2,
                           {**extra, "snapshot_step": step})

        result = train(family, data, loop, paths.work(family_name), fingerprint, device, on_log=on_log, shard=shard,
                       on_snapshot=on_snapshot)
        if isinstance(family, FitsData):
            family.on_train_end(fit_set, loop.batch_size * 2)
        mlflow.log_metrics({"train_images_per_s": result.images_per_s, "train_wall_s": result.wall_s,
                            "num_parameters": family.num_parameters()})
        with atomic_dir(paths.checkpoint(family_name)) as out:
            save_bundle(out, family, extra)
            for step in loop.snapshots:  # the weights part-way through, for the quality-vs-compute curve
                shutil.copytree(snapshots / snapshot_name(step), out / SNAPSHOTS / snapshot_name(step))
            write_history(out / "history.csv", result.history)
            write_json_atomic(out / "run.json", {"run_id": run.info.run_id,
                                                 "experiment_id": run.info.experiment_id})
            write_json_atomic(out / "train.json", {"steps": result.steps, "wall_s": round(result.wall_s, 3),
                                                   "images_per_s": round(result.images_per_s, 2),
                                                   "resumed_from": result.resumed_from,
                                                   "num_parameters": family.num_parameters(),
                                                   "device": str(device), "processes": shard.world,
                                                   "budget": budget.as_dict(),
                                                   "base": lineage,
                                                   "warnings": monitor.warnings if monitor else []})
        curve = _write_train_report(paths, family_name, result.history, family.monitor_loss)
        mlflow.log_artifact(str(curve), artifact_path="plots")
    return TrainStageResult(family_name, run.info.run_id, result.steps,
                            _final_loss(result.history, family.monitor_loss), result.images_per_s,
                            result.wall_s, result.resumed_from)


LOSSES_CSV = "losses.csv"
SNAPSHOTS = "snapshots"


def snapshot_steps(fractions: list[float], steps: int) -> tuple[int, ...]:
    """The steps at which `train.snapshots` (fractions of the run) keep the weights: distinct, before the end."""
    return tuple(sorted({round(f * steps) for f in fractions} - {0, steps}))


def snapshot_name(step: int) -> str:
    return f"step-{step:08d}"


def _budget(family, cfg, tcfg, data, device, seed: int):
    """The family's steps from train.budget (or an explicit step count), with its FLOPs per step counted on the
    first real batch; refused when the family cannot train that many steps."""
    from genops.data.tensors import Batch
    from genops.errors import GenopsError
    from genops.training.budget import flops_per_step, resolve_steps
    from genops.training.loop import BatchSchedule

    first = data.batch(BatchSchedule(len(data), tcfg.batch_size, seed).indices(0))
    batch = Batch(first.x.to(device), first.y.to(device))
    flops = flops_per_step(family, batch, cfg.learning_rate(tcfg.lr), seed)
    try:
        budget = resolve_steps(family.name, cfg.steps, tcfg.steps, tcfg.budget, flops)
    except ValueError as exc:
        raise GenopsError(str(exc)) from None
    if isinstance(family, Phased):
        family.check_steps(budget.steps)
    return budget


def _save_snapshot(folder: Path, family, data, batch_size: int, extra: dict) -> None:
    """The family as it stands mid-run, finished like the final model (post-training fits on a copy), as a bundle.
    A resumed run keeps a snapshot it already wrote for the same fingerprint; the training run's random state is
    left untouched."""
    import copy

    from genops.training.device import rng_kept

    if (folder / WEIGHTS).is_file() and read_meta(folder).get("fingerprint") == extra["fingerprint"]:
        return
    with rng_kept(family.device):
        snap = copy.deepcopy(family)
        snap.train_mode(False)
        if isinstance(snap, FitsData):
            snap.on_train_end(data, batch_size)
        with atomic_dir(folder) as out:
            save_bundle(out, snap, extra)


def _write_train_report(paths: ProjectPaths, family_name: str, history: list[dict[str, float]],
                        monitor_loss: str) -> Path:
    """reports/FAMILY/train: loss_curve.png, and losses.csv for `dvc plots` (step on x; `loss` is the family's
    monitored loss, the one its stability is measured on, then every logged column)."""
    from genops.evaluation.history import write_history
    from genops.evaluation.plots import save_loss_curve

    folder = paths.report(family_name) / "train"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"step": h["step"], "loss": h.get(monitor_loss, float("nan")),
             **{k: v for k, v in h.items() if k not in ("step", "loss")}} for h in history]
    write_history(folder / LOSSES_CSV, rows)
    return save_loss_curve(history, folder / "loss_curve.png", f"{family_name} training losses")


def _log_dataset(paths: ProjectPaths, spec_data: dict, mapped: bool) -> None:
    """Record the training split as an MLflow dataset input (name, digest, source).

    A memory-mapped split is recorded by its metadata, with our full-content data hash as the digest: MLflow's
    numpy digest flattens (copies) the whole array, which is what mapping avoids."""
    import mlflow

    from genops.data.tensors import split_arrays

    name = f"{spec_data['source']}@{spec_data['data_hash']}"
    if mapped:
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        ds = MetaDataset(resolve_dataset_source(str(paths.prepared)), name=name, digest=spec_data["data_hash"])
    else:
        images, labels = split_arrays(paths.prepared, "train")
        ds = mlflow.data.from_numpy(images, targets=labels, source=str(paths.prepared), name=name)
    mlflow.log_input(ds, context="training")


def _run_ranks(family_name: str, params: Params, paths: ProjectPaths) -> TrainStageResult:
    """`genops train FAMILY` under torchrun with exactly these params (overrides included), then its result."""
    import os
    import subprocess

    import yaml

    from genops.config import dump
    from genops.errors import GenopsError
    from genops.training.distributed import die_with_parent, torchrun_command

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
    if not (folder / "train.json").is_file():
        raise GenopsError(f"train {family_name}: torchrun finished but rank 0 wrote no {folder / 'train.json'}")
    from genops.evaluation.history import read_history
    from genops.models.registry import family_class

    history = read_history(folder / "history.csv")
    return _stored_result(folder, family_name, _final_loss(history, family_class(family_name).monitor_loss))


def _final_loss(history: list[dict], key: str) -> float:
    """The last logged value of the family's own loss (`Family.monitor_loss`: a GAN's is loss_d, not "loss")."""
    return float(history[-1].get(key, float("nan"))) if history else float("nan")


def _stored_result(folder: Path, family_name: str, final_loss: float) -> TrainStageResult:
    """The result of the finished run whose train.json and run.json are in `folder`."""
    info, run = json.loads((folder / "train.json").read_text()), json.loads((folder / "run.json").read_text())
    return TrainStageResult(family_name, run["run_id"], info["steps"], final_loss, info["images_per_s"],
                            info["wall_s"], info.get("resumed_from", 0))


def _up_to_date(paths: ProjectPaths, family_name: str, meta: dict) -> TrainStageResult | None:
    """The finished checkpoint of exactly this fingerprint, if it is already in place.

    DVC re-runs `train` whenever anything under src/genops/models or the family's params change (it cannot
    tell what matters); this keeps such a re-run from retraining an unaffected family. Settings outside the
    fingerprint (sampler defaults, evaluation budgets) are refreshed in family.json, weights untouched, so
    later stages and the registered model see the current ones."""
    folder = paths.checkpoint(family_name)
    needed = [folder / n for n in (FAMILY_JSON, WEIGHTS, "run.json", "train.json", "history.csv")]
    if not all(p.is_file() for p in needed):
        return None
    stored = read_meta(folder)
    if stored.get("fingerprint") != meta["fingerprint"]:
        return None
    if stored != meta:
        write_meta(folder, meta)
        log.info("train %s: weights up to date; refreshed the settings that do not change training", family_name)
    log.info("train %s: checkpoint already matches these params, data and code; nothing to train", family_name)
    return _stored_result(folder, family_name, float("nan"))


def _collapse_monitor(paths: ProjectPaths, family, train_set):
    """A CollapseMonitor in evaluator features when the family asks for one, else None."""
    settings = family.monitor_settings() if isinstance(family, Monitored) else None
    if settings is None:
        return None
    from genops.evaluation.features import features_and_probs, load_evaluator, reference_subset
    from genops.training.monitor import CollapseMonitor

    net, meta = load_evaluator(paths)
    labeled = meta["kind"] == "classifier"
    reference = reference_subset(train_set, settings.samples, 7)
    return CollapseMonitor(family, lambda x: features_and_probs(net, x, labeled),
                           features_and_probs(net, reference, labeled)[0], every=settings.every,
                           n_samples=settings.samples, min_recall=settings.min_recall, min_modes=settings.min_modes)

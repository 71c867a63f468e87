"""evaluate: test-split metrics, sampling speed, memorisation, sample grid and latent interpolation for one family."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import torch

from genops.config import Params
from genops.config.sections import EvaluateConfig
from genops.data.domains import attach_domains
from genops.data.tensors import ImageSet, load_split
from genops.evaluation.curve import quality_curve
from genops.evaluation.evaluator_view import evaluator_view
from genops.evaluation.family_figures import save_family_figures
from genops.evaluation.features import load_evaluator
from genops.evaluation.history import read_history
from genops.evaluation.inpainting import inpainting_metrics
from genops.evaluation.memorisation import CopyReport, copy_fraction
from genops.evaluation.sampling import SampleScorer, sample_set, sampling_speed
from genops.evaluation.stability import stability
from genops.models.capabilities import OwnMetrics
from genops.models.family import Family
from genops.storage.atomic import write_json_atomic
from genops.storage.bundle import load_bundle, read_meta
from genops.storage.paths import ProjectPaths
from genops.tracking.runs import family_run
from genops.training.device import seed_everything, select_device

log = logging.getLogger(__name__)


def evaluate_stage(family_name: str, params: Params, root: Path) -> dict[str, float]:
    paths, cfg = ProjectPaths(root), params.evaluation(family_name)
    seed = cfg.seed
    seed_everything(seed, params.train.num_threads)
    device = select_device(params.train.device)
    family = load_bundle(paths.checkpoint(family_name), device)
    # Extra data sources the family trained with (CycleGAN's domain B): the same splits, checked by content hash.
    attach_domains(family, params.family(family_name).data_sources(), root, params.seed, params.data.test_fraction,
                   expected=read_meta(paths.checkpoint(family_name)).get("domains", {}))
    test = load_split(paths.prepared, "test", params.data.in_memory_max_mb)
    train_info = json.loads((paths.checkpoint(family_name) / "train.json").read_text())
    log.info("evaluate %s on %d test images", family_name, len(test))
    net, emeta = load_evaluator(paths)
    metrics = dict(family.evaluate(test, cfg, torch.Generator().manual_seed(seed), evaluator_view(net, emeta))
                   if isinstance(family, OwnMetrics) else {})
    samples = sample_set(family, _n_eval(family_name, cfg, int(emeta["n_eval"])), seed, cfg.batch_size)
    train = load_split(paths.prepared, "train", params.data.in_memory_max_mb)
    scorer = SampleScorer(net, emeta, train, cfg)
    metrics.update(scorer(samples, intervals=True))
    metrics.update(scorer.variants(family))
    copies = _copies(family_name, samples, test, train, cfg, int(emeta["n_eval"]), device)
    metrics.update(copies.metrics)
    curve = _curve(paths, family, samples, scorer, cfg, train_info, device)
    inpainting = inpainting_metrics(family, test, scorer, cfg.inpaint_samples, seed, cfg.batch_size)
    metrics.update(inpainting[0] if inpainting is not None else {})
    metrics["n_samples"] = float(len(samples))
    metrics.update(stability(read_history(paths.checkpoint(family_name) / "history.csv"), key=family.monitor_loss))
    metrics.update(_cost_metrics(family, cfg, train_info))
    metrics = {k: round(float(v), 6) for k, v in metrics.items()}
    figures = save_family_figures(paths.report(family_name) / "eval", family, samples, copies, train, test,
                                  inpainting, cfg.grid_size, seed, device)
    out = {"family": family_name, "primary_metric": family.primary_metric.name,
           "primary_direction": family.primary_metric.direction,
           "feature_space": emeta["kind"], "warnings": train_info.get("warnings", []),
           "budget": train_info.get("budget"), "curve": curve, **metrics}
    write_json_atomic(paths.metrics(family_name), out)
    _log_evaluation(root, paths, family_name, metrics, curve, figures)
    return out


def _log_evaluation(root: Path, paths: ProjectPaths, family_name: str, metrics: dict[str, float], curve: list[dict],
                    figures: list[Path]) -> None:
    """The metrics, the compute curve (against the training step) and the figures, in the family's training run."""
    with family_run(root, paths, family_name):
        mlflow.log_metrics(metrics)
        for point in curve:
            mlflow.log_metrics({f"curve_{k}": point[k] for k in ("fid", "recall") if k in point}, step=point["step"])
        for fig in figures:
            mlflow.log_artifact(str(fig), artifact_path="plots")


def _n_eval(family_name: str, cfg: EvaluateConfig, floor: int) -> int:
    """As many samples as real images in the floor (same FID bias), unless the family's budget is lower."""
    n_eval = min(floor, cfg.n_samples)
    if n_eval < floor:
        log.warning("evaluate %s: %d samples (family budget) against a floor of %d real images: FID/KID are "
                    "biased upwards by the smaller sample", family_name, n_eval, floor)
    return n_eval


def _copies(family_name: str, samples: torch.Tensor, test: ImageSet, train: ImageSet, cfg: EvaluateConfig,
            floor: int, device: torch.device) -> CopyReport:
    """Near-copies of training images, against as many held-out test images as the floor uses."""
    held_out = test.batch(torch.arange(min(floor, len(test)))).x
    copies = copy_fraction(samples, held_out, train, cfg.copy_quantile, cfg.copy_reference, cfg.seed, cfg.interval,
                           cfg.batch_size, device)
    log.info("evaluate %s: %.3f of samples are near-copies of training images (held-out test images: %.3f)",
             family_name, copies.metrics["copy_fraction"], copies.metrics["test_copy_fraction"])
    return copies


def _curve(paths: ProjectPaths, family: Family, samples: torch.Tensor, scorer: SampleScorer, cfg: EvaluateConfig,
           train_info: dict, device: torch.device) -> list[dict]:
    """Quality against compute, from the snapshots train kept (none for a run without a budget)."""
    if "budget" not in train_info:
        return []
    final = samples if len(samples) >= cfg.curve_samples else sample_set(family, cfg.curve_samples, cfg.seed,
                                                                         cfg.batch_size)
    return quality_curve(paths.checkpoint(family.name), final, scorer, cfg.curve_samples, cfg.seed,
                         cfg.batch_size, device, train_info["budget"])


def _cost_metrics(family: Family, cfg: EvaluateConfig, train_info: dict) -> dict[str, float]:
    """Sampling speed through torch, and what training cost (from train.json)."""
    speed = sampling_speed(family, cfg.speed_samples, cfg.batch_size, cfg.seed)
    return {
        "sample_images_per_s_torch": speed["images_per_s"],
        "sample_batch1_latency_ms_torch": speed["batch1_latency_ms"],
        "train_images_per_s": train_info["images_per_s"],
        "train_wall_s": train_info["wall_s"],
        **({"train_steps": train_info["budget"]["steps"], "train_flops": train_info["budget"]["total_flops"]}
           if "budget" in train_info else {}),
        "num_parameters": float(family.num_parameters()),
    }

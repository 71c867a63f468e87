"""evaluate: test-split metrics, sampling speed, memorisation, sample grid and latent interpolation for one family."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from genops.config import Params
from genops.data.domains import attach_domains
from genops.data.tensors import load_split
from genops.models.capabilities import Interpolates, InterpolatesNoise, OwnFigures, OwnMetrics, Traverses
from genops.storage.atomic import write_json_atomic
from genops.storage.bundle import load_bundle, read_meta
from genops.storage.paths import ProjectPaths

log = logging.getLogger(__name__)


def evaluate_stage(family_name: str, params: Params, root: Path) -> dict[str, float]:
    import mlflow

    from genops.evaluation.evaluator_view import evaluator_view
    from genops.evaluation.features import load_evaluator
    from genops.evaluation.history import read_history
    from genops.evaluation.inpainting import inpainting_metrics
    from genops.evaluation.memorisation import closest_pairs, copy_fraction
    from genops.evaluation.plots import save_grid
    from genops.evaluation.sampling import SampleScorer, sample_set, sampling_speed
    from genops.evaluation.stability import stability
    from genops.tracking.runs import family_run
    from genops.training.device import seed_everything, select_device

    paths = ProjectPaths(root)
    cfg = params.evaluation(family_name)
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
    # As many samples as real images in the floor (same FID bias), unless the family's budget is lower.
    n_eval = min(int(emeta["n_eval"]), cfg.n_samples)
    if n_eval < int(emeta["n_eval"]):
        log.warning("evaluate %s: %d samples (family budget) against a floor of %d real images: FID/KID are "
                    "biased upwards by the smaller sample", family_name, n_eval, int(emeta["n_eval"]))
    samples = sample_set(family, n_eval, seed, cfg.batch_size)
    train = load_split(paths.prepared, "train", params.data.in_memory_max_mb)
    scorer = SampleScorer(net, emeta, train, cfg)
    metrics.update(scorer(samples, intervals=True))
    metrics.update(scorer.variants(family))
    # Near-copies of training images, against as many held-out test images as the floor uses.
    held_out = test.batch(torch.arange(min(int(emeta["n_eval"]), len(test)))).x
    copies = copy_fraction(samples, held_out, train, cfg.copy_quantile, cfg.copy_reference, seed, cfg.interval,
                           cfg.batch_size, device)
    metrics.update(copies.metrics)
    log.info("evaluate %s: %.3f of samples are near-copies of training images (held-out test images: %.3f)",
             family_name, copies.metrics["copy_fraction"], copies.metrics["test_copy_fraction"])
    curve = []
    if "budget" in train_info:  # quality against compute, from the snapshots train kept
        from genops.evaluation.curve import quality_curve

        final = samples if len(samples) >= cfg.curve_samples else sample_set(family, cfg.curve_samples, seed,
                                                                             cfg.batch_size)
        curve = quality_curve(paths.checkpoint(family_name), final, scorer, cfg.curve_samples, seed,
                              cfg.batch_size, device, train_info["budget"])
    inpainting = inpainting_metrics(family, test, scorer, cfg.inpaint_samples, seed, cfg.batch_size)
    if inpainting is not None:
        metrics.update(inpainting[0])
    metrics["n_samples"] = float(len(samples))
    metrics.update(stability(read_history(paths.checkpoint(family_name) / "history.csv"), key=family.monitor_loss))
    speed = sampling_speed(family, cfg.speed_samples, cfg.batch_size, seed)
    metrics.update({
        "sample_images_per_s_torch": speed["images_per_s"],
        "sample_batch1_latency_ms_torch": speed["batch1_latency_ms"],
        "train_images_per_s": train_info["images_per_s"],
        "train_wall_s": train_info["wall_s"],
        **({"train_steps": train_info["budget"]["steps"], "train_flops": train_info["budget"]["total_flops"]}
           if "budget" in train_info else {}),
        "num_parameters": float(family.num_parameters()),
    })
    metrics = {k: round(float(v), 6) for k, v in metrics.items()}

    report = paths.report(family_name) / "eval"
    shutil.rmtree(report, ignore_errors=True)
    grid = save_grid(samples[: cfg.grid_size], report / "samples.png", nrow=8)
    a, b = test.head(8).to(device), test.to(device)
    first = a.batch(torch.arange(0, 8, device=device))
    figures = [grid, save_grid(closest_pairs(samples, copies, train), report / "nearest.png",
                               nrow=min(8, len(samples)))]
    if isinstance(family, Interpolates):
        interp = family.interpolate(first, b.batch(torch.arange(8, 16, device=device) % len(test)), steps=10)
        figures.append(save_grid(interp, report / "interpolation.png", nrow=10))
    elif isinstance(family, InterpolatesNoise):
        figures.append(save_grid(family.noise_interpolation(len(first.x), 10, first.y), report / "interpolation.png",
                                 nrow=10))
    if inpainting is not None:  # rows: masked input, completion, original
        figures.append(save_grid(inpainting[1], report / "inpainting.png", nrow=len(inpainting[1]) // 3))
    if isinstance(family, OwnFigures):
        for name, (images, nrow) in family.figures(torch.Generator().manual_seed(seed)).items():
            figures.append(save_grid(images, report / f"{name}.png", nrow=nrow))
    if isinstance(family, Traverses):
        walk = family.traverse(a.batch(torch.arange(0, len(a), device=device)), steps=10)
        figures.append(save_grid(walk, report / "traversal.png", nrow=10))
    out = {"family": family_name, "primary_metric": family.primary_metric.name,
           "primary_direction": family.primary_metric.direction,
           "feature_space": emeta["kind"], "warnings": train_info.get("warnings", []),
           "budget": train_info.get("budget"), "curve": curve, **metrics}
    write_json_atomic(paths.metrics(family_name), out)

    with family_run(root, paths, family_name):
        mlflow.log_metrics(metrics)
        for point in curve:  # MLflow draws these against the training step
            mlflow.log_metrics({f"curve_{k}": point[k] for k in ("fid", "recall") if k in point}, step=point["step"])
        for fig in figures:
            mlflow.log_artifact(str(fig), artifact_path="plots")
    return out

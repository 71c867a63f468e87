"""evaluate: test-split metrics, sampling speed, sample grid and latent interpolation for one family."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from genops.bundle import load_bundle
from genops.data.tensors import load_split
from genops.evaluation.stability import stability
from genops.fsutil import write_json_atomic
from genops.models.base import Family
from genops.paths import ProjectPaths
from genops.stages.common import evaluation_config, family_run

log = logging.getLogger(__name__)


def sampling_speed(family: Family, n: int, batch_size: int, seed: int, nets=None) -> dict[str, float]:
    """images/s at `batch_size` and batch-1 latency (ms), after one warm-up call each."""
    gen = torch.Generator().manual_seed(seed)
    family.sample(min(batch_size, n, 8), gen, nets=nets)  # warm-up (small: samplers can be very slow)
    t0 = time.perf_counter()
    done = 0
    while done < n:
        family.sample(min(batch_size, n - done), gen, nets=nets)
        done += min(batch_size, n - done)
    throughput = n / (time.perf_counter() - t0)
    family.sample(1, gen, nets=nets)
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        family.sample(1, gen, nets=nets)
    latency_ms = (time.perf_counter() - t0) / reps * 1000
    return {"images_per_s": throughput, "batch1_latency_ms": latency_ms}


def sample_set(family: Family, n: int, seed: int, batch_size: int, **variant) -> torch.Tensor:
    """n samples from fixed noise (seeded), in batches: the same draws for every evaluation of a family."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    labels_all = family.default_labels(n)
    for start in range(0, n, batch_size):
        labels = labels_all[start : start + batch_size] if labels_all is not None else None
        out.append(family.sample(min(batch_size, n - start), gen, labels=labels, **variant).cpu())
    return torch.cat(out)


def variant_metrics(paths: ProjectPaths, family: Family, net, meta: dict, cfg: dict, seed: int) -> dict:
    """FID, recall and images/s for each sampling variant (e.g. DDPM-T vs DDIM-S): a measured curve.

    Variants use `evaluate.variant_samples` images each (fewer than the headline FID, so expensive
    samplers stay affordable); compare variants with each other, not with the headline number.
    """
    import time

    out: dict[str, float] = {}
    n = min(int(cfg.get("variant_samples", 200)), int(meta["n_eval"]))
    for name, kwargs in family.sample_variants().items():
        t0 = time.perf_counter()
        images = sample_set(family, n, seed, int(cfg.get("batch_size", 256)), **kwargs)
        rate = n / (time.perf_counter() - t0)
        quality = sample_quality(paths, net, meta, images, cfg)
        out.update({f"{name}_fid": quality["fid"], f"{name}_recall": quality["recall"],
                    f"{name}_images_per_s": rate, f"{name}_samples": float(n)})
        log.info("evaluate %s variant %s: FID %.2f at %.1f images/s", family.name, name, quality["fid"], rate)
    return out


def sample_quality(paths: ProjectPaths, net, meta: dict, samples: torch.Tensor, cfg: dict) -> dict:
    """FID, KID, precision/recall, density/coverage, classifier score and modes, in evaluator features."""
    from genops.evaluation.sample_metrics import all_metrics
    from genops.stages.evaluator import features_and_probs, reference_subset

    labeled = meta["kind"] == "classifier"
    train = load_split(paths.prepared, "train")
    reference = reference_subset(train, int(cfg.get("n_reference", 2000)), int(cfg.get("seed", 1234)))
    ref_feats, _ = features_and_probs(net, reference, labeled)
    fake_feats, fake_probs = features_and_probs(net, samples, labeled)
    return all_metrics(ref_feats, fake_feats, fake_probs, cfg)


def evaluate_stage(family_name: str, params: dict, root: Path) -> dict[str, float]:
    import mlflow

    from genops.evaluation.plots import save_grid
    from genops.training.device import seed_everything, select_device

    paths = ProjectPaths(root)
    cfg = evaluation_config(params, family_name)
    seed = int(cfg.get("seed", 1234))
    seed_everything(seed, params.get("train", {}).get("num_threads"))
    device = select_device(str(params.get("train", {}).get("device", "auto")))
    family = load_bundle(paths.checkpoint(family_name), device)
    test = load_split(paths.prepared, "test")
    train_info = json.loads((paths.checkpoint(family_name) / "train.json").read_text())

    log.info("evaluate %s on %d test images", family_name, len(test))
    metrics = dict(family.evaluate(test, cfg, torch.Generator().manual_seed(seed)))
    from genops.stages.evaluator import load_evaluator

    net, emeta = load_evaluator(paths)
    # As many samples as real images in the floor (same FID bias), unless the family's budget is lower.
    n_eval = min(int(emeta["n_eval"]), int(cfg.get("n_samples", emeta["n_eval"])))
    if n_eval < int(emeta["n_eval"]):
        log.warning("evaluate %s: %d samples (family budget) against a floor of %d real images: FID/KID are "
                    "biased upwards by the smaller sample", family_name, n_eval, int(emeta["n_eval"]))
    samples = sample_set(family, n_eval, seed, int(cfg.get("batch_size", 256)))
    metrics.update(sample_quality(paths, net, emeta, samples, cfg))
    metrics.update(variant_metrics(paths, family, net, emeta, cfg, seed))
    metrics["n_samples"] = float(len(samples))
    metrics.update(stability(_history(paths.checkpoint(family_name) / "history.csv"), key=family.monitor_loss))
    speed = sampling_speed(family, int(cfg.get("speed_samples", 256)), int(cfg.get("batch_size", 256)), seed)
    metrics.update({
        "sample_images_per_s_torch": speed["images_per_s"],
        "sample_batch1_latency_ms_torch": speed["batch1_latency_ms"],
        "train_images_per_s": train_info["images_per_s"],
        "train_wall_s": train_info["wall_s"],
        "num_parameters": float(family.num_parameters()),
    })
    metrics = {k: round(float(v), 6) for k, v in metrics.items()}

    report = paths.report(family_name) / "eval"
    import shutil

    shutil.rmtree(report, ignore_errors=True)
    grid = save_grid(samples[: int(cfg.get("grid_size", 64))], report / "samples.png", nrow=8)
    a, b = test.head(8).to(device), test.to(device)
    interp = family.interpolate(a.batch(torch.arange(0, 8, device=device)),
                                b.batch(torch.arange(8, 16, device=device) % len(test)), steps=10)
    figures = [grid]
    if interp is not None:
        figures.append(save_grid(interp, report / "interpolation.png", nrow=10))
    out = {"family": family_name, "primary_metric": family.primary_metric.name,
           "primary_direction": family.primary_metric.direction,
           "feature_space": emeta["kind"], "warnings": train_info.get("warnings", []), **metrics}
    write_json_atomic(paths.metrics(family_name), out)

    with family_run(root, paths, family_name):
        mlflow.log_metrics(metrics)
        for fig in figures:
            mlflow.log_artifact(str(fig), artifact_path="plots")
    return out


def _history(path: Path) -> list[dict[str, float]]:
    import csv

    with path.open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]

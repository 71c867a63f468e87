"""Quality against compute: the family's snapshots part-way through training, scored like the final model.

Every point uses the same number of samples (`evaluate.curve_samples`, the final model's first ones
included), because FID is biased by the sample count: points are comparable along a curve and across
families, not with the headline FID (which scores more samples)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from genops.evaluation.sampling import SampleScorer, sample_set
from genops.storage.bundle import load_bundle, read_meta

log = logging.getLogger(__name__)

CURVE_METRICS = ("fid", "kid_mean", "recall", "precision", "modes_covered")


def snapshot_dirs(checkpoint: Path) -> list[Path]:
    """The snapshots the train stage kept, in step order."""
    folder = checkpoint / "snapshots"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def quality_curve(checkpoint: Path, final_samples: torch.Tensor, scorer: SampleScorer, n: int, seed: int,
                  batch_size: int, device: torch.device, budget: dict) -> list[dict]:
    """[{step, fraction, flops, fid, kid_mean, recall, precision, modes_covered}] for each snapshot and the end."""
    steps, per_step = int(budget["steps"]), float(budget["flops_per_step"])
    points = []
    for folder in snapshot_dirs(checkpoint):
        step = int(read_meta(folder)["snapshot_step"])
        family = load_bundle(folder, device)
        samples = sample_set(family, n, seed, batch_size)
        points.append(_point(step, steps, per_step, scorer(samples)))
        log.info("evaluate %s after %d of %d steps: FID %.2f on %d samples", family.name, step, steps,
                 points[-1]["fid"], n)
    points.append(_point(steps, steps, per_step, scorer(final_samples[:n])))
    return points


def _point(step: int, steps: int, per_step: float, metrics: dict[str, float]) -> dict:
    return {"step": step, "fraction": round(step / steps, 6), "flops": step * per_step,
            **{k: round(float(metrics[k]), 6) for k in CURVE_METRICS if k in metrics}}

"""Mode-collapse watch during training: every K steps, recall and modes covered on a small sample.

GANs can collapse onto a few modes while their losses look fine; this makes it visible while the
run is going (logged to MLflow) and leaves a warning in the report when a threshold is crossed.
The callables it needs (sample features, reference features) are handed in by the train stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from genops.evaluation.sample_metrics import modes_covered, precision_recall
from genops.models.family import Family

log = logging.getLogger(__name__)


@dataclass
class CollapseMonitor:
    family: Family
    features: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]  # images -> (feats, probs)
    reference: torch.Tensor  # real reference features
    every: int = 250
    n_samples: int = 256
    min_recall: float = 0.05
    min_modes: int = 5
    seed: int = 99
    warnings: list[str] = field(default_factory=list)

    @torch.no_grad()
    def __call__(self, step: int) -> dict[str, float]:
        self.family.train_mode(False)
        try:
            labels = self.family.sampling_labels(self.n_samples)
            images = self.family.sample(self.n_samples, torch.Generator().manual_seed(self.seed), labels=labels)
        finally:
            self.family.train_mode(True)
        feats, probs = self.features(images.cpu())
        out = {"monitor_recall": precision_recall(self.reference, feats)["recall"]}
        if probs is not None:
            out["monitor_modes_covered"] = modes_covered(probs, 0.5)["modes_covered"]
        low_recall = out["monitor_recall"] < self.min_recall
        low_modes = probs is not None and out["monitor_modes_covered"] < self.min_modes
        if low_recall or low_modes:
            msg = (f"possible mode collapse at step {step}: recall {out['monitor_recall']:.3f} "
                   f"(threshold {self.min_recall})"
                   + (f", modes covered {out['monitor_modes_covered']:.0f} (threshold {self.min_modes})"
                      if probs is not None else ""))
            log.warning("%s: %s", self.family.name, msg)
            self.warnings.append(msg)
        return out

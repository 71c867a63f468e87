"""Drawing and scoring samples of a family: fixed-noise sample sets, quality in evaluator features, the
quality/speed curve of sampling variants, and sampling speed (torch or ONNX Runtime networks alike)."""

from __future__ import annotations

import logging
import time

import torch

from genops.config.sections import EvaluateConfig
from genops.data.tensors import ImageSet
from genops.evaluation.bootstrap import bootstrap_intervals
from genops.evaluation.feature_net import EvaluatorNet
from genops.evaluation.features import features_and_probs, reference_subset
from genops.evaluation.sample_metrics import all_metrics
from genops.models.capabilities import SampleVariants
from genops.models.family import Family

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
    labels_all = family.sampling_labels(n)
    for start in range(0, n, batch_size):
        labels = labels_all[start : start + batch_size] if labels_all is not None else None
        out.append(family.sample(min(batch_size, n - start), gen, labels=labels, **variant).cpu())
    return torch.cat(out)


class SampleScorer:
    """Scores sample sets against the fixed real reference set, in the evaluator's feature space."""

    def __init__(self, net: EvaluatorNet, meta: dict, train: ImageSet, cfg: EvaluateConfig) -> None:
        self.net, self.meta, self.cfg = net, meta, cfg
        self.labeled = meta["kind"] == "classifier"
        reference = reference_subset(train, cfg.n_reference, cfg.seed)
        self.reference = features_and_probs(net, reference, self.labeled)[0]

    def __call__(self, samples: torch.Tensor, intervals: bool = False) -> dict[str, float]:
        """FID, KID, precision/recall, density/coverage, classifier score and modes; with `intervals`, also
        their bootstrap intervals (`evaluate.bootstrap` resamples of these samples, computed after the
        headline values, which they leave untouched)."""
        fake_feats, fake_probs = features_and_probs(self.net, samples, self.labeled)
        out = all_metrics(self.reference, fake_feats, fake_probs, self.cfg, seed=self.cfg.seed)
        if intervals:
            out.update(bootstrap_intervals(self.reference, fake_feats, out, self.cfg))
        return out

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """The evaluator's class of each image (a classifier evaluator only)."""
        return features_and_probs(self.net, images, True)[1].argmax(1).cpu()

    def variants(self, family: Family) -> dict[str, float]:
        """FID, recall and images/s for each sampling variant (e.g. DDPM-T vs DDIM-S): a measured curve.

        Variants use `evaluate.variant_samples` images each (fewer than the headline FID, so expensive
        samplers stay affordable); compare variants with each other, not with the headline number.
        """
        out: dict[str, float] = {}
        n = min(self.cfg.variant_samples, int(self.meta["n_eval"]))
        variants = family.sample_variants() if isinstance(family, SampleVariants) else {}
        for name, kwargs in variants.items():
            t0 = time.perf_counter()
            images = sample_set(family, n, self.cfg.seed, self.cfg.batch_size, **kwargs)
            rate = n / (time.perf_counter() - t0)
            quality = self(images)
            out.update({f"{name}_fid": quality["fid"], f"{name}_recall": quality["recall"],
                        f"{name}_precision": quality["precision"],
                        f"{name}_images_per_s": rate, f"{name}_samples": float(n)})
            log.info("evaluate %s variant %s: FID %.2f at %.1f images/s", family.name, name, quality["fid"], rate)
        return out

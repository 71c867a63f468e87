"""evaluator: train the in-domain feature network, and measure the floor (real test vs real train).

Every sample-based metric of every family is computed in this network's feature space, against the
same reference set of real training images. The floor is what a perfect generator would score.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from genops.config import Params
from genops.config.sections import EvaluatorConfig
from genops.data.spec import DataSpec
from genops.data.tensors import ImageSet, load_split
from genops.evaluation.feature_net import EvaluatorNet, batched, train_classifier
from genops.evaluation.features import META, WEIGHTS, features_and_probs, reference_subset
from genops.evaluation.sample_metrics import all_metrics
from genops.storage.atomic import atomic_dir, write_json_atomic
from genops.storage.paths import ProjectPaths
from genops.training.device import seed_everything
from genops.validation.gate import require_validated

log = logging.getLogger(__name__)


def evaluator_stage(params: Params, root: Path) -> dict:
    paths = ProjectPaths(root)
    spec = DataSpec.from_dict(require_validated(paths))
    cfg, ecfg = params.evaluator, params.evaluate
    seed_everything(cfg.seed, params.train.num_threads)
    limit = params.data.in_memory_max_mb
    train, test = load_split(paths.prepared, "train", limit), load_split(paths.prepared, "test", limit)
    net = EvaluatorNet(spec, spec.num_classes, cfg.width, cfg.num_features)
    kind, accuracy = _fit(net, spec, train, test, cfg, params.train.progress)
    # Samples per family = real test images in the floor, so FID's sample-size bias is the same for both.
    n = min(ecfg.n_samples, len(test))
    reference = reference_subset(train, ecfg.n_reference, ecfg.seed)
    ref_feats, _ = features_and_probs(net, reference, spec.labeled)
    held_out = test.images[:n]
    test_feats, test_probs = features_and_probs(net, held_out, spec.labeled)
    floor = all_metrics(ref_feats, test_feats, test_probs, ecfg, seed=cfg.seed)
    meta = {"kind": kind, "test_accuracy": accuracy, "spec": spec.to_dict(), "num_classes": spec.num_classes,
            "width": cfg.width, "num_features": net.num_features,
            "n_reference": len(reference), "n_floor": len(held_out), "n_eval": len(held_out)}
    with atomic_dir(paths.evaluator) as out:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / WEIGHTS))
        write_json_atomic(out / META, meta)
    result = {"feature_space": kind, "test_accuracy": accuracy,
              **{f"floor_{k}": round(v, 6) for k, v in floor.items()},
              "n_reference": len(reference), "n_floor": len(held_out)}
    write_json_atomic(paths.evaluator_metrics, result)
    return result


def _fit(net: EvaluatorNet, spec: DataSpec, train: ImageSet, test: ImageSet, cfg: EvaluatorConfig,
         progress: bool) -> tuple[str, float | None]:
    """A classifier trained on labeled data (with its test accuracy), else seeded random-weight features."""
    if not spec.labeled:
        net.eval()
        log.info("evaluator: unlabeled data -> seeded random-weight features")
        return "random-features", None  # Naeem et al. 2020: seeded random conv features for unlabeled data
    losses = train_classifier(net, train.images, train.labels, cfg.steps, cfg.batch_size, cfg.lr, cfg.seed, progress)
    with torch.no_grad():
        pred = batched(net, test.images).argmax(1)
    accuracy = float((pred == test.labels).double().mean())
    log.info("evaluator: classifier test accuracy %.4f (final loss %.4f)", accuracy, losses[-1])
    return "classifier", accuracy

"""evaluator: train the in-domain feature network, and measure the floor (real test vs real train).

Every sample-based metric of every family is computed in this network's feature space, against the
same reference set of real training images. The floor is what a perfect generator would score.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genops.data.spec import DataSpec
from genops.data.tensors import ImageSet, load_split
from genops.evaluation.evaluator import EvaluatorNet, FeatureExtractor, batched, train_classifier
from genops.fsutil import atomic_dir, write_json_atomic
from genops.paths import ProjectPaths
from genops.stages.common import require_validated

log = logging.getLogger(__name__)


def reference_subset(train: ImageSet, n: int, seed: int) -> torch.Tensor:
    """The fixed real reference images (uint8): a seeded subset of the training split."""
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return train.images[idx.sort().values]


def load_evaluator(paths: ProjectPaths) -> tuple[EvaluatorNet, dict]:
    folder = paths.root / "checkpoints" / "evaluator"
    meta = json.loads((folder / "evaluator.json").read_text())
    net = EvaluatorNet(DataSpec.from_dict(meta["spec"]), meta["num_classes"], meta["width"], meta["num_features"])
    net.load_state_dict(load_file(str(folder / "weights.safetensors")))
    return net.eval(), meta


def features_and_probs(net: EvaluatorNet, images: torch.Tensor, labeled: bool):
    feats = batched(FeatureExtractor(net), images)
    probs = torch.softmax(net.classifier(feats), dim=1) if labeled else None
    return feats, probs


def evaluator_stage(params: dict, root: Path) -> dict:
    from genops.evaluation.sample_metrics import all_metrics
    from genops.training.device import seed_everything

    paths = ProjectPaths(root)
    spec = DataSpec.from_dict(require_validated(paths))
    cfg = params.get("evaluator", {})
    ecfg = params.get("evaluate", {})
    seed = int(cfg.get("seed", 0))
    seed_everything(seed, params.get("train", {}).get("num_threads"))
    train, test = load_split(paths.prepared, "train"), load_split(paths.prepared, "test")
    net = EvaluatorNet(spec, spec.num_classes, int(cfg.get("width", 32)), int(cfg.get("num_features", 128)))
    accuracy = None
    if spec.labeled:
        kind = "classifier"
        losses = train_classifier(net, train.images, train.labels, int(cfg.get("steps", 1500)),
                                  int(cfg.get("batch_size", 128)), float(cfg.get("lr", 1e-3)), seed)
        with torch.no_grad():
            pred = batched(net, test.images).argmax(1)
        accuracy = float((pred == test.labels).double().mean())
        log.info("evaluator: classifier test accuracy %.4f (final loss %.4f)", accuracy, losses[-1])
    else:
        kind = "random-features"  # Naeem et al. 2020: seeded random conv features for unlabeled data
        net.eval()
        log.info("evaluator: unlabeled data -> seeded random-weight features")

    # Samples per family = real test images in the floor, so FID's sample-size bias is the same for both.
    n = min(int(ecfg.get("n_samples", 1000)), len(test))
    reference = reference_subset(train, int(ecfg.get("n_reference", 2000)), int(ecfg.get("seed", 1234)))
    ref_feats, _ = features_and_probs(net, reference, spec.labeled)
    held_out = test.images[:n]
    test_feats, test_probs = features_and_probs(net, held_out, spec.labeled)
    floor = all_metrics(ref_feats, test_feats, test_probs, {**ecfg, "seed": seed})
    meta = {"kind": kind, "test_accuracy": accuracy, "spec": spec.to_dict(), "num_classes": spec.num_classes,
            "width": int(cfg.get("width", 32)), "num_features": net.num_features,
            "n_reference": len(reference), "n_floor": len(held_out), "n_eval": len(held_out)}
    with atomic_dir(paths.root / "checkpoints" / "evaluator") as out:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "weights.safetensors"))
        write_json_atomic(out / "evaluator.json", meta)
    result = {"feature_space": kind, "test_accuracy": accuracy,
              **{f"floor_{k}": round(v, 6) for k, v in floor.items()},
              "n_reference": len(reference), "n_floor": len(held_out)}
    write_json_atomic(paths.root / "metrics" / "evaluator.json", result)
    return result

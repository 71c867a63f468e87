"""The evaluator network on disk and the features every sample metric is computed in.

Shared by the evaluator stage (which trains and saves it), the evaluate stage and the training-time
collapse monitor (which score samples with it).
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from genops.data.spec import DataSpec
from genops.data.tensors import ImageSet
from genops.errors import GenopsError
from genops.evaluation.feature_net import EvaluatorNet, FeatureExtractor, batched
from genops.storage.paths import ProjectPaths

WEIGHTS = "weights.safetensors"
META = "evaluator.json"


def reference_subset(train: ImageSet, n: int, seed: int) -> torch.Tensor:
    """The fixed real reference images (uint8): a seeded subset of the training split."""
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return train.images[idx.sort().values].contiguous()


def load_evaluator(paths: ProjectPaths) -> tuple[EvaluatorNet, dict]:
    folder = paths.evaluator
    if not (folder / META).is_file():
        raise GenopsError(f"{folder / META} is missing: run `genops evaluator` first")
    meta = json.loads((folder / META).read_text())
    net = EvaluatorNet(DataSpec.from_dict(meta["spec"]), meta["num_classes"], meta["width"], meta["num_features"])
    net.load_state_dict(load_file(str(folder / WEIGHTS)))
    return net.eval(), meta


@torch.no_grad()
def features_and_probs(net: EvaluatorNet, images: torch.Tensor, labeled: bool):
    """Penultimate features and (for a trained classifier) class probabilities of uint8 or [0, 1] images."""
    feats = batched(FeatureExtractor(net), images)
    probs = torch.softmax(net.classifier(feats), dim=1) if labeled else None
    return feats, probs

"""The evaluator as the plain functions a family's own metrics take (`models.family.EvaluatorView`).

Apart from features.py because it knows the models layer's interface: the evaluator stage imports features.py,
and must not depend on (and be re-run for) model code.
"""

from __future__ import annotations

import torch

from genops.evaluation.feature_net import EvaluatorNet
from genops.evaluation.sample_metrics import fid
from genops.models.family import EvaluatorView


def evaluator_view(net: EvaluatorNet, meta: dict) -> EvaluatorView:
    """Features and class probabilities computed with gradients off, in the caller's batches, on the evaluator's
    device; classify is None for random-feature evaluators (unlabeled data); FID between two feature sets."""
    labeled = meta["kind"] == "classifier"

    def device() -> torch.device:
        return next(net.parameters()).device

    @torch.no_grad()
    def features(x: torch.Tensor) -> torch.Tensor:
        return net.features(x.float().to(device()))

    @torch.no_grad()
    def classify(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(x.float().to(device())), dim=1)

    return EvaluatorView(features, classify if labeled else None, fid)

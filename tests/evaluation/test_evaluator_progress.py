"""The evaluator's training bar follows train.progress, like every other bar."""

from __future__ import annotations

import torch

from genops.data.spec import DataSpec
from genops.evaluation.feature_net import EvaluatorNet, train_classifier


def test_no_bar_when_progress_is_off(capsys):
    net = EvaluatorNet(DataSpec(28, 28, 1, 10), 10, width=4, num_features=8)
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(16) % 10
    train_classifier(net, images, labels, 3, 8, 1e-3, 0, progress=False)
    assert "train evaluator" not in capsys.readouterr().err
    train_classifier(net, images, labels, 3, 8, 1e-3, 0, progress=True)
    assert "train evaluator" in capsys.readouterr().err

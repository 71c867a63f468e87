"""The evaluator: a small CNN whose penultimate features replace Inception's for FID, KID, P/R, D/C.

Inception weights cannot be downloaded here and do not describe 28x28 digits anyway; as the KID
paper did for MNIST, we measure in the feature space of a classifier trained on the data itself.
For unlabeled data there is nothing to classify: we fall back to the same network with seeded
random weights, whose features Naeem et al. (2020) found to rank generators sensibly. The report
says which feature space was used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from genops.data.spec import DataSpec


class EvaluatorNet(nn.Module):
    """conv blocks -> global average pool -> `num_features`-d penultimate layer -> class logits."""

    def __init__(self, spec: DataSpec, num_classes: int, width: int = 32, num_features: int = 128) -> None:
        super().__init__()
        self.num_features = num_features  # torchmetrics reads this instead of probing the network
        self.body = nn.Sequential(
            nn.Conv2d(spec.channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * width, num_features), nn.ReLU(),
        )
        self.classifier = nn.Linear(num_features, max(num_classes, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


class FeatureExtractor(nn.Module):
    """The module handed to torchmetrics: images in [0, 1] -> penultimate features (float64 safe)."""

    def __init__(self, net: EvaluatorNet) -> None:
        super().__init__()
        self.net = net
        self.num_features = net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x.float())


def train_classifier(net: EvaluatorNet, images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int,
                     lr: float, seed: int, progress: bool = True) -> list[float]:
    """Plain Adam + cross-entropy on uint8 images (N x C x H x W); returns the loss per step. `progress` is
    train.progress (tqdm also honours TQDM_DISABLE=1)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    losses = []

    quiet = {} if progress else {"disable": True}  # left unset otherwise, so TQDM_DISABLE still applies
    for _ in tqdm(range(steps), desc="train evaluator", mininterval=1.0, dynamic_ncols=True, **quiet):
        idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=gen)
        x = images[idx].float() / 255.0
        loss = F.cross_entropy(net(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    return losses


@torch.no_grad()
def batched(fn, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Apply fn to uint8 or float images in batches (uint8 is scaled to [0, 1])."""
    outs = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        outs.append(fn(x.float() / 255.0 if x.dtype == torch.uint8 else x))
    return torch.cat(outs)

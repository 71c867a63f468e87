"""What the generic training loop hands to a family's `train_step`: one step's optimisers, noise and shard."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from genops.models.sharding import SINGLE, BatchNoise, Shard


@dataclass
class StepContext:
    """What the generic training loop hands to a family's train_step."""

    step: int
    total_steps: int  # the family's whole budget (a phased family splits it)
    optimizers: Mapping[str, torch.optim.Optimizer]
    autocast: Callable[[], AbstractContextManager]
    generator: torch.Generator  # the family's source of training noise (saved with checkpoints)
    shard: Shard = SINGLE  # this process's share of the global batch (data-parallel training)

    @property
    def noise(self) -> BatchNoise:
        """Per-sample noise for this rank's rows of the batch: draw training noise here, not from `generator`,
        so that n processes train exactly as one does."""
        return BatchNoise(self.generator, self.shard)

    def backward(self, optimizer: str, loss: torch.Tensor) -> None:
        """Zero the optimizer's gradients, back-propagate `loss`, average the gradients over the ranks.
        Clipping, gradient norms and `optimizer.step()` come after, on the averaged gradients."""
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.shard.average_gradients(p for group in opt.param_groups for p in group["params"])

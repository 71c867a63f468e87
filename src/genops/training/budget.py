"""Compute budgets: how many steps a family trains for, from training FLOPs rather than wall time.

A fair comparison gives every family the same compute. Wall time depends on the machine and on what else
runs on it; FLOPs of a step depend only on the networks and the batch shape, so counting them over real
steps makes the step count a deterministic function of the budget (same params, same steps, anywhere).
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.capabilities import Phased, cost_phases
from genops.models.family import Family
from genops.models.step import StepContext
from genops.training.device import rng_kept
from genops.training.loop import BatchSchedule

# The step count phases are placed in while probing: far beyond any real run, so a phase at fraction f of the
# steps starts at a step index no schedule treats specially (warm-up ends, EMA ramps) other than by its phase.
_PROBE_TOTAL = 1_000_000


class FlopCount(TorchDispatchMode):
    """Sums torch's own per-operator FLOP formulas (torch.utils.flop_counter.flop_registry) over every op run.

    Why not FlopCounterMode itself: its module tracker raises on `autograd.grad` of a leaf input, which is
    exactly WGAN-GP's gradient penalty; the formulas (matmul, conv, attention, their backward) are the same."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


@dataclass(frozen=True)
class StepBudget:
    """A family's resolved training budget: what decided the steps, and the compute they cost."""

    steps: int
    flops_per_step: float
    budget: float | None  # train.budget, when it decided the steps
    source: str  # "train.budget" | "train.steps" | "FAMILY.steps"

    @property
    def total_flops(self) -> float:
        return self.steps * self.flops_per_step

    def as_dict(self) -> dict:
        return {**asdict(self), "total_flops": self.total_flops}


def flops_per_step(family: Family, batch: Batch, lr: float, seed: int) -> float:
    """Training FLOPs of one average step (forward, backward, double backward where there is one), counted on a
    copy of the family so the real one, its optimisers and every random generator are left as they were.

    Phased families (VQ-VAE: autoencoder, then prior) and cyclic ones (a GAN's generator step every n_critic
    critic steps) say so as `Phased` families (genops.models.capabilities); each phase is counted over one
    whole cycle and weighted by its share of the steps."""
    probe = copy.deepcopy(family)
    optimizers = probe.make_optimizers(lr)
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    with rng_kept(batch.x.device):
        probe.train_mode(True)
        phases, cycle = cost_phases(probe)
        for start, share in phases:
            first = int(start * _PROBE_TOTAL) + 1  # +1: first-step work (data-dependent inits) is not per-step
            counter = FlopCount()
            with counter:
                for step in range(first, first + cycle):
                    probe.train_step(batch, StepContext(step, _PROBE_TOTAL, optimizers, nullcontext, generator))
            total += share * counter.total / cycle
    return total


def resolve_steps(family: str, family_steps: int | None, train_steps: int | None, budget: float | None,
                  flops: float) -> StepBudget:
    """The family's own `steps`, else `train.steps`, else `train.budget` / FLOPs per step."""
    if family_steps is not None:
        return StepBudget(family_steps, flops, None, f"{family}.steps")
    if train_steps is not None:
        return StepBudget(train_steps, flops, None, "train.steps")
    if budget is None or not math.isfinite(flops) or flops <= 0:
        raise ValueError(f"{family}: no step count (train.budget={budget}, {flops} FLOPs per step)")
    return StepBudget(max(1, round(budget / flops)), flops, budget, "train.budget")


def plan_budget(family: Family, family_steps: int | None, train_steps: int | None, budget: float | None,
                data: ImageSet, batch_size: int, lr: float, device: torch.device, seed: int) -> StepBudget:
    """The family's steps from train.budget (or an explicit step count), with its FLOPs per step counted on the
    first real batch; refused, naming why, when the family cannot train that many steps."""
    first = data.batch(BatchSchedule(len(data), batch_size, seed).indices(0))
    flops = flops_per_step(family, Batch(first.x.to(device), first.y.to(device)), lr, seed)
    try:
        planned = resolve_steps(family.name, family_steps, train_steps, budget, flops)
    except ValueError as exc:
        raise GenopsError(str(exc)) from None
    if isinstance(family, Phased):
        family.check_steps(planned.steps)
    return planned

"""Exponential moving average of weights for sampling (torch.optim.swa_utils does the averaging)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn


def ema_avg_fn(decay: float, warmup: bool) -> Callable:
    """AveragedModel's multi_avg_fn: torch's EMA with `decay`, optionally ramped up as min(decay, (1+n)/(10+n))
    so short runs are not dominated by the first weights."""
    if not warmup:
        return get_ema_multi_avg_fn(decay)

    def update(ema_params, params, n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(ema_params, params, n_averaged)

    return update

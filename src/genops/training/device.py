"""Device choice and seeding: CUDA with bf16 autocast when a GPU is really there, CPU otherwise."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch

from genops.errors import GenopsError


def select_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise GenopsError(f"train.device={preference!r} but no CUDA GPU is available (use 'auto' or 'cpu')")
    return torch.device(preference)


def autocast_for(device: torch.device) -> Callable[[], AbstractContextManager]:
    """bf16 autocast on CUDA; plain fp32 on CPU, where bf16 is slow and breaks bit-reproducibility."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed python, numpy and torch; CPU runs with the same seed give the same numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(int(threads))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def rng_kept(device: torch.device) -> AbstractContextManager:
    """Work inside leaves torch's CPU (and, on CUDA, that device's) random state as it was: side computations
    (FLOP probes, snapshots) must not change what the training run draws next."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

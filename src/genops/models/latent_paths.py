"""Paths through a latent space for interpolation strips."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def slerp(za: torch.Tensor, zb: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation between the rows of za and zb (N x D) at fraction t: Gaussian noise keeps its
    norm along the path, where a straight line would pass through low-density, small-norm points."""
    omega = torch.acos((F.normalize(za, dim=1) * F.normalize(zb, dim=1)).sum(1).clamp(-1, 1))[:, None]
    return (torch.sin((1 - t) * omega) * za + torch.sin(t * omega) * zb) / torch.sin(omega).clamp_min(1e-6)

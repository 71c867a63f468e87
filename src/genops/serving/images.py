"""Images as users receive them: uint8 arrays, the same bytes whether from `genops sample` or the registry."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """N x C x H x W floats in [0, 1] -> uint8 N x H x W (one channel) or N x H x W x C."""
    arr = (images.detach().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    return arr[..., 0] if arr.shape[-1] == 1 else arr

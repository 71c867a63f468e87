"""Images as users receive them: uint8 arrays, the same bytes whether from `genops sample` or the registry."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from genops.errors import GenopsError

log = logging.getLogger(__name__)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """N x C x H x W floats in [0, 1] -> uint8 N x H x W (one channel) or N x H x W x C."""
    arr = (images.detach().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def _open(path: Path, mode: str, height: int, width: int, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
    except (OSError, UnidentifiedImageError) as exc:
        raise GenopsError(f"{path}: not a readable image for {what} ({exc})") from None
    if img.size != (width, height):  # a named repair: the model only knows its own size
        log.warning("%s: resized from %dx%d to the model's %dx%d", path, img.size[0], img.size[1], width, height)
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img)


def read_image(path: Path, channels: int, height: int, width: int) -> torch.Tensor:
    """An image file as the model's 1 x C x H x W tensor in [0, 1] (converted to gray/RGB, resized if needed)."""
    arr = _open(path, "L" if channels == 1 else "RGB", height, width, "--inpaint").astype(np.float32) / 255
    return torch.from_numpy(arr.reshape(height, width, channels).transpose(2, 0, 1).copy())[None]


def read_mask(path: Path | None, height: int, width: int) -> torch.Tensor:
    """1 x 1 x H x W, 1 = keep (white, >= 128), 0 = generate (black); no file: keep the top half."""
    if path is None:
        mask = torch.ones(1, 1, height, width)
        mask[..., height // 2:, :] = 0
        return mask
    keep = torch.from_numpy((_open(path, "L", height, width, "--mask") >= 128).astype(np.float32))[None, None]
    if keep.all() or not keep.any():
        raise GenopsError(f"{path}: the mask keeps {'every' if keep.all() else 'no'} pixel; white = keep, "
                          "black = generate, and both are needed")
    return keep

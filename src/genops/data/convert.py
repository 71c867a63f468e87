"""Turning raw images of any size, depth and channel count into one uint8 H x W x C array."""

from __future__ import annotations

import numpy as np
from PIL import Image

from genops.data.sources import RawDataset


def value_max_for(dtype: np.dtype, float_max: float) -> float:
    """The full-scale value of a dtype: what maps to white."""
    if dtype == np.bool_:
        return 1.0
    if np.issubdtype(dtype, np.floating):
        return float_max
    if dtype == np.uint8:
        return 255.0
    return 65535.0  # 16-bit PNG/TIFF (PIL mode I and I;16)


def choose_size(raw: RawDataset, index: np.ndarray, image_size, max_size: int) -> tuple[int, int]:
    """`image_size` if given, else the most common size among the images at `index`, shrunk so its longer side
    fits max_size (sizes come from file headers: nothing is decoded for this)."""
    if image_size:
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        return int(h), int(w)
    sizes = raw.sizes(index)
    if not sizes:
        return (max_size, max_size)
    h, w = sizes.most_common(1)[0][0]
    scale = min(1.0, max_size / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def choose_channels(raw: RawDataset, index: np.ndarray, channels) -> int:
    """`channels` if 1 or 3; 'auto' picks 3 only when some image at `index` really has colour."""
    if channels in (1, 3):
        return int(channels)
    return 3 if raw.has_colour(index) else 1


def to_uint8(pixels: np.ndarray, size: tuple[int, int], channels: int, float_max: float) -> np.ndarray:
    """Scale to 0..255, fix channels, resize (bicubic, PIL) to `size`; NaN/inf become 0 (validation reports them)."""
    scale = value_max_for(pixels.dtype, float_max)
    x = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=scale, neginf=0.0) / scale
    x = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    if x.shape[-1] == 3 and channels == 1:
        x = np.asarray(Image.fromarray(x, "RGB").convert("L"))[..., None]
    elif x.shape[-1] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=-1)
    if x.shape[:2] != size:
        img = Image.fromarray(x[..., 0] if channels == 1 else x, "L" if channels == 1 else "RGB")
        img = img.resize((size[1], size[0]), Image.Resampling.BICUBIC, reducing_gap=None)
        x = np.asarray(img).reshape(size[0], size[1], channels)
    return np.ascontiguousarray(x)

"""Pictures people would rather look at than read: sample grids, interpolation strips, loss curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def grid_array(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """N x C x H x W floats in [0, 1] -> one uint8 H' x W' x 3 tiled image."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    canvas = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, dtype=np.uint8)
    arr = (images.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    if c == 1:
        arr = np.repeat(arr, 3, axis=1)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = arr[i].transpose(1, 2, 0)
    return canvas


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None, scale: int | None = None) -> Path:
    """Save a grid PNG, upscaled (nearest) so 8x8 or 28x28 images are visible."""
    canvas = grid_array(images, nrow)
    scale = scale or max(1, 512 // max(canvas.shape[:2]))
    img = Image.fromarray(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display on servers and CI).

    Imported here, when a figure is drawn, not when genops is: choosing the backend is process-wide, and a
    notebook that imports genops keeps its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_loss_curve(history: list[dict[str, float]], path: Path, title: str) -> Path:
    """One panel per logged loss, raw and smoothed, against training step."""
    plt = pyplot()

    keys = [k for k in history[0] if k != "step"] if history else []
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4 * max(1, len(keys)), 3), squeeze=False)
    steps = np.array([h["step"] for h in history])
    for ax, key in zip(axes[0], keys):
        values = np.array([h[key] for h in history], dtype=float)
        ax.plot(steps, values, alpha=0.3, lw=0.8)
        window = max(1, len(values) // 50)
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, lw=1.5)
        ax.set_title(key)
        ax.set_xlabel("step")
        if values.size and values.min() > 0 and values.max() / max(values.min(), 1e-12) > 100:
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

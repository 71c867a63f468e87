"""The pictures evaluate leaves in reports/FAMILY/eval: samples, nearest training images, and one figure per
capability the family has (interpolation, inpainting, traversal, its own)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from genops.data.tensors import ImageSet
from genops.evaluation.memorisation import CopyReport, closest_pairs
from genops.evaluation.plots import save_grid
from genops.models.capabilities import Interpolates, InterpolatesNoise, OwnFigures, Traverses
from genops.models.family import Family


def save_family_figures(folder: Path, family: Family, samples: torch.Tensor, copies: CopyReport, train: ImageSet,
                        test: ImageSet, inpainting: tuple[dict, torch.Tensor] | None, grid_size: int, seed: int,
                        device: torch.device) -> list[Path]:
    """Replace `folder` with this evaluation's figures; returns their paths, the sample grid first."""
    shutil.rmtree(folder, ignore_errors=True)
    grid = save_grid(samples[:grid_size], folder / "samples.png", nrow=8)
    a, b = test.head(8).to(device), test.to(device)
    first = a.batch(torch.arange(0, 8, device=device))
    figures = [grid, save_grid(closest_pairs(samples, copies, train), folder / "nearest.png",
                               nrow=min(8, len(samples)))]
    if isinstance(family, Interpolates):
        interp = family.interpolate(first, b.batch(torch.arange(8, 16, device=device) % len(test)), steps=10)
        figures.append(save_grid(interp, folder / "interpolation.png", nrow=10))
    elif isinstance(family, InterpolatesNoise):
        figures.append(save_grid(family.noise_interpolation(len(first.x), 10, first.y), folder / "interpolation.png",
                                 nrow=10))
    if inpainting is not None:  # rows: masked input, completion, original
        figures.append(save_grid(inpainting[1], folder / "inpainting.png", nrow=len(inpainting[1]) // 3))
    if isinstance(family, OwnFigures):
        for name, (images, nrow) in family.figures(torch.Generator().manual_seed(seed)).items():
            figures.append(save_grid(images, folder / f"{name}.png", nrow=nrow))
    if isinstance(family, Traverses):
        walk = family.traverse(a.batch(torch.arange(0, len(a), device=device)), steps=10)
        figures.append(save_grid(walk, folder / "traversal.png", nrow=10))
    return figures

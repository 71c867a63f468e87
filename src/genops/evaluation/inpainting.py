"""Inpainting measured: test images with their bottom half masked, completed by a family that can (diffusion),
scored by the in-domain evaluator.

`inpaint_accuracy` is the evaluator's accuracy on the completions against the images' true labels; beside it,
the same classifier on the masked images (bottom half black: what the completion starts from) and on the full
originals, so the number reads between "no help" and "perfect". `inpaint_fid` is the completions' FID against
the reference set (as every sample's).
"""

from __future__ import annotations

import logging

import torch

from genops.data.tensors import ImageSet
from genops.models.capabilities import Inpaints
from genops.models.family import Family

log = logging.getLogger(__name__)


def half_mask(n: int, height: int, width: int) -> torch.Tensor:
    """1 = keep: the top half of every image; the bottom half is what gets completed."""
    mask = torch.ones(n, 1, height, width)
    mask[:, :, height // 2:, :] = 0
    return mask


def inpainting_metrics(family: Family, test: ImageSet, scorer, n: int, seed: int,
                       batch_size: int) -> tuple[dict[str, float], torch.Tensor] | None:
    """Metrics and a figure (rows: masked input, completion, original) for the first n test images; None when
    the family cannot inpaint or n is 0."""
    n = min(n, len(test))
    if n == 0 or not isinstance(family, Inpaints):
        return None
    subset = test.head(n)
    batch = subset.batch(torch.arange(n))
    images, labels = batch.x.cpu(), batch.y
    mask = half_mask(n, images.shape[2], images.shape[3])
    gen = torch.Generator().manual_seed(seed)
    done = []
    for start in range(0, n, batch_size):
        done.append(family.complete(images[start:start + batch_size], mask[start:start + batch_size], gen).cpu())
    completed = torch.cat(done)
    masked = images * mask
    out = {"inpaint_fid": scorer(completed)["fid"], "inpaint_images": float(n),
           "inpaint_kept_mse": float((completed - images).pow(2).mul(mask).sum() / mask.expand_as(images).sum())}
    if scorer.labeled and labels is not None and bool((labels >= 0).all()):
        predict = scorer.predict
        truth = labels.cpu()
        out.update({"inpaint_accuracy": float((predict(completed) == truth).float().mean()),
                    "inpaint_masked_accuracy": float((predict(masked) == truth).float().mean()),
                    "inpaint_original_accuracy": float((predict(images) == truth).float().mean())})
    log.info("inpaint %s: %s", family.name, {k: round(v, 4) for k, v in out.items()})
    rows = min(8, n)
    figure = torch.cat([masked[:rows], completed[:rows], images[:rows]])
    return out, figure

"""Autoregressive sampling: one network pass per variable in raster order, the loop outside the graph."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from genops.models.family import Net


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Categorical draws (N,) from logits (N, K) and uniforms (N,) in [0, 1).

    Both back-ends' logits go through the same float64 arithmetic on the CPU, so torch and ONNX
    Runtime produce the same draw unless a uniform lands within float error of a bin edge.
    """
    cdf = torch.softmax(logits.detach().double().cpu(), dim=1).cumsum(1)
    target = (u.double().cpu() * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=logits.shape[1] - 1)


@torch.no_grad()
def sample_autoregressive(net: Net, n: int, shape: tuple[int, int, int], generator: torch.Generator,
                          labels: torch.Tensor | None, to_input: Callable[[torch.Tensor], torch.Tensor],
                          device: torch.device | str = "cpu", progress: bool = True,
                          desc: str = "sample") -> torch.Tensor:
    """Fill an (n, C, H, W) grid of indices in raster order, sub-pixel by sub-pixel: one pass each.

    `net(to_input(indices)[, labels])` returns logits (N, K, C, H, W) or (N, K, H, W) for C = 1. The
    uniforms for every step are drawn up front from `generator` (CPU), so a run's images depend only
    on the seed and the network, not on the back-end or batch timing.
    """
    c, h, w = shape
    u = torch.rand(n, c, h, w, generator=generator)
    grid = torch.zeros(n, c, h, w, dtype=torch.long, device=device)
    extra = () if labels is None else (labels.to(device),)
    with tqdm(total=c * h * w, desc=desc, disable=not progress, leave=False, mininterval=1.0) as bar:
        for i in range(h):
            # Row i depends only on rows <= i (causal padding), so the pass skips the rows below:
            # half the work on average. Two rows at least, so graphs never see a size-1 row axis.
            rows = min(h, max(i + 1, 2))
            for j in range(w):
                for k in range(c):
                    logits = net(to_input(grid[:, :, :rows]), *extra)
                    if logits.dim() == 4:
                        logits = logits.unsqueeze(2)
                    grid[:, k, i, j] = inverse_cdf(logits[:, :, k, i, j], u[:, k, i, j]).to(grid.device)
                    bar.update(1)
    return grid

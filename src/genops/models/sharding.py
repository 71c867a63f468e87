"""Data-parallel training: this process's share of every global batch, and what the ranks must agree on.

torchrun starts one process per rank. Each takes its rows of the step's global batch, draws the noise
of the *global* batch and keeps its own rows (so n processes see exactly the draws one would), and
averages gradients with the others after every backward pass. Everything else a family decides from
data — VQ-VAE codebook statistics, which codes to restart, batch-norm statistics — is reduced over
the ranks with the helpers below, so every rank holds the same weights at every step. Not covered: dropout
masks come from each rank's global torch generator (seeded alike), so they are valid but not the masks one
process would draw (the default models use no dropout; the GPU profile's diffusion does).

Why not `DistributedDataParallel`: families run several forward passes per backward (a GAN's
discriminator on the real and the fake batch, a frozen discriminator in the generator step) and
WGAN-GP differentiates through a gradient (double backward), which DDP's reducer does not support;
DDP would also rename every state-dict key. Averaging each optimizer's gradients in one coalesced
all-reduce after backward (what Horovod's DistributedOptimizer does), through `torch.distributed`
itself, fits every family without special cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Shard:
    """Rank `rank` of `world` data-parallel processes (0 of 1: plain single-process training)."""

    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes checkpoints and decides what must be decided once."""
        return self.rank == 0

    def local(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous rows of a global batch (rank order = the single-process order)."""
        if not self.active:
            return indices
        if len(indices) % self.world:
            raise ValueError(f"a global batch of {len(indices)} images does not split over {self.world} ranks")
        n = len(indices) // self.world
        return indices[self.rank * n: (self.rank + 1) * n]

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Replace every gradient by its mean over the ranks (one coalesced all-reduce)."""
        if not self.active:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, values: Mapping[str, float]) -> dict[str, float]:
        """Logged scalars averaged over the ranks: every rank then logs, and judges divergence, alike."""
        if not self.active or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        t = all_reduce_sum(t) / self.world
        return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}

    def broadcast_state(self, modules: Iterable[nn.Module]) -> None:
        """Every rank starts from rank 0's parameters and buffers (seeded inits agree anyway; this makes sure)."""
        if not self.active:
            return
        for module in modules:
            for t in module.state_dict().values():
                dist.broadcast(t, 0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


SINGLE = Shard()


def current_shard() -> Shard:
    """The shard of this process: from the initialised process group, else single-process."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return SINGLE


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over the ranks (in place on a copy); `t` itself outside a process group."""
    if not current_shard().active:
        return t
    out = t.clone()
    dist.all_reduce(out)
    return out


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of `t` concatenated in rank order: the global batch's rows as one process has them."""
    shard = current_shard()
    if not shard.active:
        return t
    parts = [torch.empty_like(t) for _ in range(shard.world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


class BatchNoise:
    """Per-sample training noise for this rank's rows of the global batch.

    Each draw takes the first dimension as this rank's row count, draws the global batch's tensor from
    the shared generator and keeps this rank's rows: the values equal a single process's draw, and the
    generators of all ranks stay in step (they all draw the same amounts)."""

    def __init__(self, generator: torch.Generator | None, shard: Shard = SINGLE) -> None:
        self.generator, self.shard = generator, shard

    def _global(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0] * self.shard.world, *shape[1:]) if self.shard.active else shape

    def randn(self, *shape: int) -> torch.Tensor:
        return self.shard.local(torch.randn(self._global(shape), generator=self.generator))

    def rand(self, *shape: int) -> torch.Tensor:
        return self.shard.local(torch.rand(self._global(shape), generator=self.generator))

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        return self.shard.local(torch.randint(0, high, self._global(shape), generator=self.generator))


def batch_noise(source: torch.Generator | BatchNoise | None) -> BatchNoise:
    """A training step's BatchNoise, or a plain generator's (None: torch's global one) draws as one process
    would make them."""
    return source if isinstance(source, BatchNoise) else BatchNoise(source)


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, on CPU tensors.

    torch's `nn.SyncBatchNorm` (used on CUDA) refuses CPU tensors; this computes the same statistics from
    all-reduced sums through `torch.distributed.nn`'s differentiable all-reduce, so gradients flow to every
    rank's inputs as they do in the single-process batch norm. Same parameters and buffers as nn.BatchNorm*,
    so checkpoints load into the plain networks."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and current_shard().active):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = x.new_tensor([x.numel() / c])
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c: 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1), m)
        view = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(view)) * torch.rsqrt(var.view(view) + self.eps)
        if self.affine:
            y = y * self.weight.view(view) + self.bias.view(view)
        return y


def sync_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` with every batch norm replaced by its synchronised version (same parameter objects): torch's
    nn.SyncBatchNorm on CUDA, GlooSyncBatchNorm on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        out = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, sync_batch_norm(child, device))
    return module

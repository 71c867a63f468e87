"""The generic, device-agnostic training loop.

Batches are a pure function of (seed, step): step s reads slice s of a seeded permutation of its
epoch, so a run resumed from a checkpoint at step k sees exactly the batches an uninterrupted run
would, and on CPU ends with bit-identical weights. Under torchrun each rank takes its rows of that
global batch (genops.models.sharding); rank 0 writes the checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError, TrainingDiverged
from genops.models.family import Family, StepContext
from genops.models.sharding import SINGLE, Shard, sync_batch_norm
from genops.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from genops.training.device import autocast_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopSettings:
    """What the loop needs, resolved by the train stage from `train` and the family's config (no defaults
    here: they live once, in genops.config)."""

    steps: int
    batch_size: int
    lr: float
    checkpoint_every: int
    log_every: int
    seed: int
    max_loss: float  # a loss beyond this counts as divergence
    progress: bool
    compile: bool = False  # CUDA only: torch.compile every network in place
    channels_last: bool = False  # CUDA only: channels-last networks and batches
    snapshots: tuple[int, ...] = ()  # steps after which `on_snapshot` keeps the weights (quality-vs-compute curve)


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    steps: int
    resumed_from: int
    wall_s: float
    images_per_s: float
    extra: dict = field(default_factory=dict)


class BatchSchedule:
    """Step -> batch indices, from a per-epoch seeded permutation (drop-last)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self.per_epoch = max(1, n // self.batch_size)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm[i * self.batch_size : (i + 1) * self.batch_size]


def train(family: Family, data: ImageSet, cfg: LoopSettings, work_dir: Path, fingerprint: str,
          device: torch.device, on_log: Callable[[int, dict[str, float]], None] | None = None,
          shard: Shard = SINGLE, on_snapshot: Callable[[int], None] | None = None) -> TrainResult:
    """Train `family` for cfg.steps, resuming from `work_dir` if a matching checkpoint is there.

    With a `shard` of several ranks every rank calls this with the same arguments (the same global batch
    size); rank 0 alone writes checkpoints, and `on_log` and `on_snapshot` should be given on rank 0 only."""
    family.to(device)
    if shard.active:
        for net in family.networks().values():
            sync_batch_norm(net, device)
    _cuda_options(family, device, cfg)
    data = data.to(device)
    optimizers = family.make_optimizers(cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed + 17)
    state = load_checkpoint(work_dir, family, optimizers, generator, fingerprint)
    shard.broadcast_state(family.networks().values())
    start = state.step if state else 0
    history = list(state.history) if state else []
    prior_seconds = state.seconds if state else 0.0
    if start:
        log.info("resuming %s from step %d (checkpoint in %s)", family.name, start, work_dir)
    schedule = BatchSchedule(len(data), cfg.batch_size, cfg.seed)
    autocast = autocast_for(device)
    family.train_mode(True)
    t0 = time.perf_counter()
    if shard.active and schedule.batch_size % shard.world:
        raise GenopsError(f"{family.name}: a global batch of {schedule.batch_size} images does not split over "
                         f"{shard.world} ranks (train.batch_size must be a multiple of the number of processes)")
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"train {family.name}",
               disable=not cfg.progress or not shard.is_main, mininterval=1.0, dynamic_ncols=True)
    # Losses stay on the device until a logging interval, then come over in one copy: no per-step host sync on
    # CUDA. On CPU (and across ranks, which average every step) each step is read at once, as before.
    read_every = cfg.log_every if device.type == "cuda" and not shard.active else 1
    pending: list[dict] = []
    losses: dict[str, float] = {}
    for step in bar:
        batch = data.batch(shard.local(schedule.indices(step)))
        if cfg.channels_last and device.type == "cuda" and batch.x.dim() == 4:
            batch = Batch(batch.x.contiguous(memory_format=torch.channels_last), batch.y)
        pending.append(family.train_step(batch, StepContext(step, cfg.steps, optimizers, autocast, generator,
                                                            shard)))
        done = step + 1
        if done % read_every and done % cfg.checkpoint_every and done != cfg.steps and done not in cfg.snapshots:
            continue
        for at, raw in zip(range(done - len(pending) + 1, done + 1), _on_host(pending), strict=True):
            losses = shard.mean(raw)
            bad = {k: v for k, v in losses.items() if not math.isfinite(v) or abs(v) > cfg.max_loss}
            if bad:
                raise TrainingDiverged(f"{family.name}: training diverged at step {at}: "
                                       + ", ".join(f"{k}={v:.4g}" for k, v in bad.items())
                                       + f" (limit |loss| <= {cfg.max_loss:g}); nothing will be registered")
            history.append({"step": at, **losses})
        pending = []
        if on_snapshot and done in cfg.snapshots:  # before the checkpoint: a run resumed past it has it
            on_snapshot(done)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            spent = prior_seconds + time.perf_counter() - t0
            if shard.is_main:
                save_checkpoint(work_dir, family, optimizers, generator, TrainState(done, history, fingerprint, spent))
            shard.barrier()
        if on_log and (done % cfg.log_every == 0 or done == cfg.steps):
            on_log(done, losses)
        if done % 10 == 0:
            bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
    bar.close()
    total = prior_seconds + time.perf_counter() - t0  # a resumed run reports the whole run's speed
    family.train_mode(False)
    return TrainResult(history, cfg.steps, start, total, cfg.steps * schedule.batch_size / total if total else 0.0)


def _on_host(pending: list[dict]) -> list[dict[str, float]]:
    """Each pending step's losses as floats (tensors or numbers), with one device-to-host copy per device."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for losses in pending:
        for v in losses.values():
            if isinstance(v, torch.Tensor):
                by_device.setdefault(v.device, []).append(v.detach().reshape(()).double())
    values = {d: iter(torch.stack(ts).tolist()) for d, ts in by_device.items()}
    return [{k: next(values[v.device]) if isinstance(v, torch.Tensor) else float(v) for k, v in losses.items()}
            for losses in pending]


def _cuda_options(family: Family, device: torch.device, cfg: LoopSettings) -> None:
    """channels-last and torch.compile (in place, so state-dict keys stay the plain ones) on CUDA."""
    if device.type != "cuda":
        return
    for net in family.networks().values():
        if cfg.channels_last:
            net.to(memory_format=torch.channels_last)
        if cfg.compile:
            net.compile()

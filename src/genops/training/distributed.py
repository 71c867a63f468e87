"""Data-parallel training through torchrun: the launch command, and joining its process group.

torchrun (`torch.distributed.run`) starts the processes, runs the rendezvous and restarts a failed group;
genops only builds its command line and, inside each process, joins the group it set up (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR in the environment): gloo on CPU, NCCL with one GPU per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from genops.config.sections import DistributedConfig
from genops.errors import GenopsError
from genops.models.sharding import SINGLE, Shard
from genops.training.device import select_device


def launched_by_torchrun() -> bool:
    """True inside a process torchrun started (its elastic agent sets these)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ


def torchrun_command(cfg: DistributedConfig, genops_args: list[str]) -> list[str]:
    """`python -m torch.distributed.run ... -m genops.cli ARGS`: one machine standalone, several through c10d."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(cfg.nproc),
           "--max-restarts", str(cfg.max_restarts)]
    if cfg.rdzv_endpoint:
        cmd += ["--nnodes", str(cfg.nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", cfg.rdzv_endpoint,
                "--rdzv-id", cfg.rdzv_id]
    else:
        cmd.append("--standalone")
    return [*cmd, "-m", "genops.cli", *genops_args]


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True) if sys.platform == "linux" else None


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies.

    torchrun starts every rank in a session of its own, so when the agent (or the stage that launched it) is
    killed with -9, the ranks would train on as orphans and write beside the rerun. Safe as a `preexec_fn`:
    one system call, no allocation."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@contextmanager
def process_group(device_preference: str) -> Iterator[tuple[Shard, torch.device]]:
    """(shard, device) of this process: torchrun's group when launched by it (left on exit), else one process."""
    if not launched_by_torchrun():
        yield SINGLE, select_device(device_preference)
        return
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the agent died before the line above took effect
        raise SystemExit("torchrun's agent is gone; this rank stops")
    device = select_device(device_preference)
    if device.type == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise GenopsError(f"torchrun local rank {local} has no GPU ({torch.cuda.device_count()} visible): "
                              "train.distributed.nproc must not exceed the GPUs of a machine")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Shard(dist.get_rank(), dist.get_world_size()), device
    finally:
        dist.destroy_process_group()

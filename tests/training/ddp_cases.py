"""Families trained for a few steps in one process and, under torchrun, in two: the weights must agree.

`python -m torch.distributed.run --standalone --nproc-per-node 2 -m tests.training.ddp_cases OUT` trains
every case on its rank's half of each global batch; rank 0 saves the weights to OUT/FAMILY.safetensors.
test_distributed trains the same cases in one process and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from genops.data.spec import DataSpec
from genops.data.tensors import ImageSet
from genops.models.registry import build_family
from genops.models.sharding import SINGLE, Shard
from genops.training.loop import LoopSettings, train

SPEC = DataSpec(8, 8, 1, 2)
GLOBAL_BATCH = 16
CASES: dict[str, dict] = {
    "autoencoder": {"latent_dim": 4, "widths": [8, 16]},
    "vae": {"latent_dim": 4, "widths": [8, 16]},
    "gan": {"latent_dim": 8, "widths": [8, 16]},  # batch norm in G and D: synchronised over the ranks
    "wgan-gp": {"latent_dim": 8, "widths": [8, 16], "n_critic": 2},  # gradient penalty: double backward
    "diffusion": {"widths": [8, 16], "timesteps": 20, "sample_steps": 4, "eval_steps": [2]},  # EMA weights
    "pixelcnn": {"width": 8, "depth": 2},
    # both phases, EMA codebook statistics, data-dependent init and dead-code restarts
    "vqvae": {"widths": [8, 16], "prior_width": 8, "prior_depth": 2, "codebook_size": 64, "dead_window": 2},
}
STEPS = 6


def data() -> ImageSet:
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(64) % 2)


def trained(name: str, shard: Shard = SINGLE, work: Path | None = None) -> dict[str, torch.Tensor]:
    """The family's weights after STEPS steps of GLOBAL_BATCH images (this rank's share of each)."""
    torch.manual_seed(0)
    family = build_family(name, SPEC, CASES[name])
    cfg = LoopSettings(steps=STEPS, batch_size=GLOBAL_BATCH, lr=1e-3, checkpoint_every=1000, log_every=1000,
                       seed=5, max_loss=1e8, progress=False)
    work = work or Path(f".ddp-work/{name}-{shard.world}")
    train(family, data(), cfg, work, "fp", torch.device("cpu"), shard=shard)
    return family.state_dict()


def main(out: Path) -> None:
    from safetensors.torch import save_file

    from genops.training.distributed import process_group

    torch.set_num_threads(1)
    with process_group("cpu") as (shard, _):
        for name in CASES:
            weights = trained(name, shard, out / "work" / name)
            if shard.is_main:
                save_file({k: v.contiguous() for k, v in weights.items()}, str(out / f"{name}.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

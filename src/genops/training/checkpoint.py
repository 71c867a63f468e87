"""Training checkpoints: weights as safetensors, optimiser and RNG state beside them.

Both files are written to temporary names and renamed, the state file last, so an interruption
at any moment leaves either the previous checkpoint or the new one, never a torn mix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genops.models.base import Family

WEIGHTS = "ckpt.safetensors"
STATE = "ckpt-state.pt"


@dataclass
class TrainState:
    step: int
    history: list[dict[str, float]]
    fingerprint: str
    seconds: float = 0.0  # training time spent so far, across resumptions


def save_checkpoint(folder: Path, family: Family, optimizers: dict, generator: torch.Generator,
                    state: TrainState) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in family.state_dict().items()}
    save_file(weights, str(folder / f".{WEIGHTS}.tmp"), metadata={"step": str(state.step)})
    payload = {
        "step": state.step,
        "history": state.history,
        "fingerprint": state.fingerprint,
        "seconds": state.seconds,
        "optimizers": {k: opt.state_dict() for k, opt in optimizers.items()},
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save(payload, folder / f".{STATE}.tmp")
    os.replace(folder / f".{WEIGHTS}.tmp", folder / WEIGHTS)
    os.replace(folder / f".{STATE}.tmp", folder / STATE)


def load_checkpoint(folder: Path, family: Family, optimizers: dict, generator: torch.Generator,
                    fingerprint: str) -> TrainState | None:
    """Restore a checkpoint made with the same fingerprint (params + data); None if there is none."""
    if not (folder / STATE).is_file() or not (folder / WEIGHTS).is_file():
        return None
    payload = torch.load(folder / STATE, weights_only=False, map_location="cpu")
    if payload.get("fingerprint") != fingerprint:
        return None
    family.load_state_dict(load_file(str(folder / WEIGHTS), device=str(family.device)))
    for k, opt in optimizers.items():
        opt.load_state_dict(payload["optimizers"][k])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    if payload.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return TrainState(payload["step"], payload["history"], fingerprint, float(payload.get("seconds", 0.0)))

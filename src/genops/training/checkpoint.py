"""Training checkpoints: weights as safetensors, optimiser and RNG state beside them, both hash-checked.

Crash safety: the weights go to a file named by their step (`ckpt-000250.safetensors`), written to a
temporary name and renamed; then the state file, which names that weights file and records its sha256,
replaces the previous state file by rename; only then are older weights files deleted. A kill at any
moment therefore leaves a state file pointing at complete weights of the same step — the previous
checkpoint or the new one, never new weights with old optimiser state.

Untrusted files: the state is read with `torch.load(weights_only=True)` (tensors, numbers, strings and
containers only: no pickled code runs), and weights whose sha256 differs from the recorded one are
refused with a message that names the file and what to do, never loaded.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genops.models.family import Family
from genops.storage.atomic import replace_durably
from genops.storage.integrity import CorruptFile, sha256_of, verify

STATE = "ckpt-state.pt"
WEIGHTS_PATTERN = "ckpt-*.safetensors"


@dataclass
class TrainState:
    step: int
    history: list[dict[str, float]]
    fingerprint: str
    seconds: float = 0.0  # training time spent so far, across resumptions


class CorruptCheckpoint(CorruptFile):
    """A checkpoint file failed its integrity check: it is not loaded (a CorruptFile, so callers treat every
    corrupt artifact alike)."""


def save_checkpoint(folder: Path, family: Family, optimizers: dict, generator: torch.Generator,
                    state: TrainState) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{state.step:06d}.safetensors"
    weights = {k: v.detach().contiguous().cpu() for k, v in family.state_dict().items()}
    save_file(weights, str(folder / f".{name}.tmp"), metadata={"step": str(state.step)})
    replace_durably(folder / f".{name}.tmp", folder / name)
    payload = {
        "step": state.step,
        "history": state.history,
        "fingerprint": state.fingerprint,
        "seconds": state.seconds,
        "weights": name,
        "weights_sha256": sha256_of(folder / name),
        "optimizers": {k: opt.state_dict() for k, opt in optimizers.items()},
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save(payload, folder / f".{STATE}.tmp")
    replace_durably(folder / f".{STATE}.tmp", folder / STATE)
    for old in folder.glob(WEIGHTS_PATTERN):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_checkpoint(folder: Path, family: Family, optimizers: dict, generator: torch.Generator,
                    fingerprint: str) -> TrainState | None:
    """Restore a checkpoint made with the same fingerprint (params + data); None if there is none.

    Raises CorruptCheckpoint when the state file cannot be read safely or the weights fail their hash."""
    if not (folder / STATE).is_file():
        return None
    what_to_do = f"delete {folder} to train this family from step 0"
    try:
        payload = torch.load(folder / STATE, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CorruptCheckpoint(f"{folder / STATE}: unreadable or not a plain tensor file ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}); not loaded: {what_to_do}") from exc
    if payload.get("fingerprint") != fingerprint or "weights" not in payload:
        return None  # other params, data or code (or a checkpoint from before weights were hash-named)
    weights = folder / payload["weights"]
    try:
        verify(weights, payload["weights_sha256"], what_to_do)
    except CorruptFile as exc:
        raise CorruptCheckpoint(str(exc)) from None
    family.load_state_dict(load_file(str(weights), device=str(family.device)))
    for k, opt in optimizers.items():
        opt.load_state_dict(payload["optimizers"][k])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    if payload.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return TrainState(payload["step"], payload["history"], fingerprint, float(payload.get("seconds", 0.0)))

"""The cost of durable writes -> benchmarks/durability.json: a training checkpoint (weights + optimiser state)
saved with the fsyncs (storage.atomic.replace_durably) and with fsync made a no-op, for the default-size diffusion
model and a larger one (the GPU profile's widths), median of repeated saves on this machine's disk.
Run: `.venv/bin/python benchmarks/durability.py`."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _time_saves(family, repeats: int, folder: Path) -> float:
    from genops.training.checkpoint import TrainState, save_checkpoint

    optimizers = family.make_optimizers(1e-3)
    times = []
    for step in range(repeats):
        t0 = time.perf_counter()
        save_checkpoint(folder, family, optimizers, torch.Generator().manual_seed(0), TrainState(step, [], "fp"))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from genops.data.spec import DataSpec
    from genops.models.registry import build_family

    spec = DataSpec(28, 28, 1, 10)
    report: dict = {"repeats": 15, "models": {}}
    real_fsync = os.fsync
    for name, cfg in (("diffusion default", {}), ("diffusion widths [64,128,256]", {"widths": [64, 128, 256]})):
        family = build_family("diffusion", spec, cfg)
        with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # the project's disk, where checkpoints go
            durable = _time_saves(family, report["repeats"], Path(tmp) / "a")
            os.fsync = lambda fd: None
            try:
                plain = _time_saves(family, report["repeats"], Path(tmp) / "b")
            finally:
                os.fsync = real_fsync
            size = sum(p.stat().st_size for p in (Path(tmp) / "a").iterdir())
        report["models"][name] = {"parameters": family.num_parameters(), "checkpoint_bytes": size,
                                  "save_s_with_fsync": round(durable, 4), "save_s_without_fsync": round(plain, 4),
                                  "fsync_cost_s": round(durable - plain, 4)}
        print(name, report["models"][name], flush=True)
    (ROOT / "benchmarks" / "durability.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

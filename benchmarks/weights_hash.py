"""Every family's weights and samples after a few seeded training steps, as hashes -> JSON (stdout or --out).

A refactor of the model interface must change no numbers: run this before and after and compare (issue 28).
Each family is built at its default size from its config class, trained through the real loop
(genops.training.loop) on seeded random images for a few steps, with the fit hooks and extra data the train
stage would give it; the state dict (every tensor, in key order) and four seeded samples are hashed.

Run: `.venv/bin/python benchmarks/weights_hash.py` (about a minute on 2 cores): it prints the hashes and whether
they equal benchmarks/weights_hash.json's reference for this machine's CPU kernels (torch picks its kernels by the
CPU's instruction set, so float results, and the hashes, differ between an AVX2 and an AVX512 machine: each
reference names the machine it was recorded on). The references were recorded at 93fc942, before issue 28.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import torch

from genops.config.families import FAMILIES
from genops.data.spec import DataSpec
from genops.data.tensors import ImageSet
from genops.models.capabilities import FitsData, Phased
from genops.models.registry import build_family
from genops.training.loop import LoopSettings, train

SPEC = DataSpec(28, 28, 1, 10, [str(i) for i in range(10)])


def _images(n: int, seed: int) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, *SPEC.shape), generator=gen, dtype=torch.uint8), torch.arange(n) % 10)


def _digest(tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def trained(name: str, steps: int, base=None):
    torch.manual_seed(0)
    family = build_family(name, SPEC, {}, base=base)
    for role in family.cfg.data_sources():
        family.attach_data(role, _images(48, 1), _images(16, 2))
    if isinstance(family, Phased):
        family.check_steps(steps)
    data = _images(64, 0)
    if isinstance(family, FitsData):
        family.on_train_start(data, 32)
    settings = LoopSettings(steps=steps, batch_size=16, lr=2e-4, checkpoint_every=steps, log_every=1, seed=0,
                            max_loss=1e9, progress=False)
    with tempfile.TemporaryDirectory() as work:
        train(family, data, settings, Path(work), "hash", torch.device("cpu"))
    if isinstance(family, FitsData):
        family.on_train_end(data, 32)
    return family


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out, built = {}, {}
    for name, entry in FAMILIES.items():  # registry order: bases come before the families stacked on them
        family = trained(name, args.steps, base=built.get(entry.base) if entry.base else None)
        built[name] = family
        state = family.state_dict()
        family.train_mode(False)
        with torch.no_grad():
            samples = family.sample(4, torch.Generator().manual_seed(3))
        out[name] = {"state": _digest([state[k] for k in sorted(state)]), "tensors": len(state),
                     "samples": _digest([samples])}
        print(name, out[name], flush=True)
    here = machine()
    refs = [r for r in json.loads(REFERENCE.read_text())["references"] if r["machine"] == here]
    verdict = ("no reference for this machine" if not refs else
               "identical to the reference" if refs[0]["families"] == out else
               "DIFFERENT from the reference: " + ", ".join(k for k in out if refs[0]["families"].get(k) != out[k]))
    print(f"{here}: {verdict}")
    if args.out:
        args.out.write_text(json.dumps({"machine": here, "families": out}, indent=1) + "\n")
    if refs and refs[0]["families"] != out:
        raise SystemExit(1)


REFERENCE = Path(__file__).with_suffix(".json")


def machine() -> dict[str, str]:
    """What decides the float results besides the code: torch's build and the CPU kernels it dispatches to."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


if __name__ == "__main__":
    main()

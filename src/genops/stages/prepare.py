"""prepare: read `data.source`, convert to one shape, write a seeded split and a metadata table."""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from genops.config import Params
from genops.data.convert import choose_channels, choose_size, to_uint8, value_max_for
from genops.data.npz import NpzWriter
from genops.data.sources import RawImage, load_source
from genops.data.spec import DataSpec
from genops.data.split import stratified_split
from genops.errors import GenopsError
from genops.storage.atomic import atomic_dir, write_json_atomic
from genops.storage.paths import ProjectPaths

log = logging.getLogger(__name__)

MIN_SIZE = 8  # the smallest prepared side the networks take (three stride-2 levels)
NAMED = 5  # files named in a repair's log line (all of them are in metadata.csv and the validation report)
REPAIRS = "repairs.json"


@dataclass
class PrepareResult:
    spec: DataSpec
    n_train: int
    n_test: int
    n_dropped: int
    data_hash: str
    repairs: dict[str, list[str]] = field(default_factory=dict)  # kind -> files


def _row(index: int, im: RawImage, float_max: float) -> dict:
    px = im.pixels
    if px is None:
        return dict(index=index, file=im.name, readable=False, height=-1, width=-1, channels=-1, dtype="",
                    raw_min=float("nan"), raw_max=float("nan"), value_max_allowed=255.0, nonfinite=0,
                    label=im.label, error=im.error)

    finite = px[np.isfinite(px)] if np.issubdtype(px.dtype, np.floating) else px
    return dict(index=index, file=im.name, readable=True, height=px.shape[0], width=px.shape[1],
                channels=px.shape[2], dtype=str(px.dtype),
                raw_min=float(finite.min()) if finite.size else float("nan"),
                raw_max=float(finite.max()) if finite.size else float("nan"),
                value_max_allowed=value_max_for(px.dtype, float_max),
                nonfinite=int(px.size - finite.size), label=im.label, error="")


def prepare_stage(params: Params, root: Path, out_dir: Path | None = None) -> PrepareResult:
    """Write train.npz, test.npz, metadata.csv and spec.json into data/prepared (replaced atomically).

    Streamed: images are read, converted and written block by block (to a scratch file in the new folder, then
    split into train/test), so peak memory does not grow with the number of images beyond a few bytes of label
    and split per image (benchmarks/data_scale.json: 1M and 5M images)."""
    out_dir = out_dir or ProjectPaths(root).prepared
    data = params.data
    seed = params.seed
    with load_source(data.source, root) as raw:
        index = np.arange(len(raw))
        if data.limit and len(raw) > data.limit:
            index = np.sort(np.random.default_rng(seed).choice(len(raw), data.limit, replace=False))
        image_size = list(data.image_size) if isinstance(data.image_size, tuple) else data.image_size
        size = choose_size(raw, index, image_size, data.max_size)
        channels = choose_channels(raw, index, data.channels)
        log.info("prepare: %d images from %s -> %dx%dx%d", len(index), data.source, size[0], size[1], channels)
        if min(size) < MIN_SIZE:
            raise GenopsError(f"data.source={data.source!r}: images would be prepared at {size[0]}x{size[1]}, below "
                              f"the {MIN_SIZE}x{MIN_SIZE} the networks need (the most common size in the data, or "
                              f"data.image_size); set data.image_size to at least {MIN_SIZE}")
        with atomic_dir(out_dir) as tmp:
            scratch = _Scratch(tmp, (size[0], size[1], channels), len(index))
            try:
                repairs = _convert(raw, index, size, channels, scratch, params.train.progress)
                if not scratch.n_ok:
                    raise GenopsError(f"data.source={data.source!r}: none of the {len(index)} images could be read")
                result = _write_splits(scratch, tmp, data, seed, raw.class_names, repairs)
            finally:
                scratch.remove()
    for kind, files in repairs.items():
        shown = ", ".join(files[:NAMED])
        log.warning("prepare: %s %d of %d images (%s%s; all in metadata.csv, column repair, and the validation "
                    "report; validation.strict: true refuses them)", kind, len(files), len(index), shown,
                    ", ..." if len(files) > NAMED else "")
    return result


class _Scratch:
    """What the conversion pass leaves for the split: the converted readable images back to back in one raw file,
    their labels, which rows were readable, and the metadata rows (all columns but `split`)."""

    def __init__(self, folder: Path, image_shape: tuple[int, int, int], n_rows: int):
        self.image_shape = image_shape
        self.pixels_path, self.rows_path = folder / ".converted.u8", folder / ".rows.csv"
        self.labels = np.empty(n_rows, np.int64)
        self.readable = np.zeros(n_rows, bool)
        self.n_ok = 0

    def blocks(self, rows: int = 8192):
        """The converted images in order, `rows` at a time (sequential reads: nothing is mapped)."""
        item = int(np.prod(self.image_shape))
        with open(self.pixels_path, "rb") as fh:
            for start in range(0, self.n_ok, rows):
                k = min(rows, self.n_ok - start)
                yield np.frombuffer(fh.read(k * item), np.uint8).reshape(k, *self.image_shape)

    def remove(self) -> None:
        self.pixels_path.unlink(missing_ok=True)
        self.rows_path.unlink(missing_ok=True)


def _convert(raw, index: np.ndarray, size: tuple[int, int], channels: int, scratch: _Scratch,
             progress: bool) -> dict[str, list[str]]:
    """One pass over the source: each block decoded, described, converted and appended to the scratch files.
    Returns the repairs (kind -> files, in source order)."""
    repairs: dict[str, list[str]] = {}
    position = 0
    quiet = {} if progress else {"disable": True}  # left unset otherwise, so TQDM_DISABLE still applies
    with (open(scratch.pixels_path, "wb") as pixels, open(scratch.rows_path, "w", newline="") as rows_out,
          tqdm(total=len(index), desc="prepare", unit="img", leave=False, **quiet) as bar):
        for block in raw.blocks(index):
            rows = []
            for im in block:
                row = _row(position, im, raw.value_max)
                if im.pixels is not None:
                    x = to_uint8(im.pixels, size, channels, raw.value_max)
                    pixels.write(x.tobytes())
                    scratch.labels[scratch.n_ok] = im.label
                    scratch.readable[position] = True
                    scratch.n_ok += 1
                    row.update(prep_height=x.shape[0], prep_width=x.shape[1], prep_channels=x.shape[2],
                               sha1=hashlib.sha1(x.tobytes()).hexdigest())
                else:
                    row.update(prep_height=-1, prep_width=-1, prep_channels=-1, sha1="")
                row["repair"] = "; ".join(_repairs(im, size, channels))
                rows.append(row)
                position += 1
            pd.DataFrame(rows).to_csv(rows_out, header=rows_out.tell() == 0, index=False)
            for kind, files in repair_summary(rows).items():
                repairs.setdefault(kind, []).extend(files)
            bar.update(len(block))
    return repairs


def _write_splits(scratch: _Scratch, tmp: Path, data, seed: int, class_names: list[str],
                  repairs: dict[str, list[str]]) -> PrepareResult:
    """The seeded split over the readable images, train.npz/test.npz written from the scratch file, the hash of
    the split (same bytes, same order as `split_hash`), metadata.csv with its `split` column, spec.json."""
    y_all = scratch.labels[:scratch.n_ok]
    is_test = stratified_split(y_all, data.test_fraction, seed)
    digest = hashlib.sha256()
    for name, in_split in (("train", ~is_test), ("test", is_test)):
        shape = (int(in_split.sum()), *scratch.image_shape)
        with NpzWriter(tmp / f"{name}.npz") as npz:
            npz.add("images", shape, np.uint8, _hashed(_select(scratch.blocks(), in_split), digest))
            npz.add("labels", (shape[0],), np.int64, _hashed([y_all[in_split]], digest))
    _write_metadata(scratch, is_test, tmp / "metadata.csv")
    data_hash = digest.hexdigest()[:16]
    num_classes = len(class_names) if (y_all >= 0).any() else 0
    spec = DataSpec(*scratch.image_shape, num_classes, class_names if num_classes else [])
    n_train, n_test = int((~is_test).sum()), int(is_test.sum())
    write_json_atomic(tmp / "spec.json", {**spec.to_dict(), "n_train": n_train, "n_test": n_test,
                                          "source": data.source, "data_hash": data_hash})
    write_json_atomic(tmp / REPAIRS, {kind: {"count": len(files), "files": files} for kind, files in repairs.items()})
    return PrepareResult(spec, n_train, n_test, len(scratch.readable) - scratch.n_ok, data_hash, repairs)


def _select(blocks, keep: np.ndarray):
    start = 0
    for block in blocks:
        yield block[keep[start:start + len(block)]]
        start += len(block)


def _hashed(blocks, digest):
    for block in blocks:
        block = np.ascontiguousarray(block)
        digest.update(block.tobytes())
        yield block


def _write_metadata(scratch: _Scratch, is_test: np.ndarray, path: Path) -> None:
    """metadata.csv: the scratch rows with `split` appended (train/test for readable rows, else dropped), rewritten
    with the csv module's quoting, which is what pandas wrote them with."""
    # Generators over the arrays, not .tolist(): a Python string per image was ~100 bytes of peak memory each
    # (measured: 5M images peaked at 650 MB anonymous, 1M at 180 MB).
    split = ("test" if t else "train" for t in is_test)
    with open(scratch.rows_path, newline="") as src, open(path, "w", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst, lineterminator="\n")
        writer.writerow([*next(reader), "split"])
        for row, ok in zip(reader, scratch.readable, strict=True):
            writer.writerow([*row, next(split) if ok else "dropped"])


def _repairs(im: RawImage, size: tuple[int, int], channels: int) -> list[str]:
    """What prepare changed about one image, each as "kind (detail)": a repair is named, never silent."""
    if im.pixels is None:
        return [f"skipped ({im.error})"]
    out = [im.repair] if im.repair else []
    h, w, c = im.pixels.shape
    if (h, w) != size:
        out.append(f"resized ({h}x{w} -> {size[0]}x{size[1]})")
    if c == 3 and channels == 1 and not (np.array_equal(im.pixels[..., 0], im.pixels[..., 1])
                                         and np.array_equal(im.pixels[..., 1], im.pixels[..., 2])):
        out.append("colour converted to grey")
    return out


def repair_summary(rows: list[dict]) -> dict[str, list[str]]:
    """kind -> the files it was applied to (in source order), e.g. {"resized": [...], "skipped": [...]}."""
    out: dict[str, list[str]] = {}
    for r in rows:
        for item in filter(None, r["repair"].split("; ")):
            out.setdefault(item.split(" (")[0], []).append(r["file"])
    return out

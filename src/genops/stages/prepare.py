"""prepare: read `data.source`, convert to one shape, write a seeded split and a metadata table."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genops.config import Params
from genops.data.convert import choose_channels, choose_size, to_uint8
from genops.data.sources import RawImage, load_source
from genops.data.spec import DataSpec
from genops.data.split import split_hash, stratified_split
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
    from genops.data.convert import value_max_for

    finite = px[np.isfinite(px)] if np.issubdtype(px.dtype, np.floating) else px
    return dict(index=index, file=im.name, readable=True, height=px.shape[0], width=px.shape[1],
                channels=px.shape[2], dtype=str(px.dtype),
                raw_min=float(finite.min()) if finite.size else float("nan"),
                raw_max=float(finite.max()) if finite.size else float("nan"),
                value_max_allowed=value_max_for(px.dtype, float_max),
                nonfinite=int(px.size - finite.size), label=im.label, error="")


def prepare_stage(params: Params, root: Path, out_dir: Path | None = None) -> PrepareResult:
    """Write train.npz, test.npz, metadata.csv and spec.json into data/prepared (replaced atomically)."""
    import pandas as pd

    out_dir = out_dir or ProjectPaths(root).prepared
    data = params.data
    seed = params.seed
    raw = load_source(data.source, root)
    images = raw.images
    limit = data.limit
    if limit and len(images) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(images), limit, replace=False))
        images = [images[i] for i in keep]
    image_size = list(data.image_size) if isinstance(data.image_size, tuple) else data.image_size
    size = choose_size(images, image_size, data.max_size)
    channels = choose_channels(images, data.channels)
    log.info("prepare: %d images from %s -> %dx%dx%d", len(images), data.source, size[0], size[1], channels)

    if min(size) < MIN_SIZE:
        raise GenopsError(f"data.source={data.source!r}: images would be prepared at {size[0]}x{size[1]}, below the "
                          f"{MIN_SIZE}x{MIN_SIZE} the networks need (the most common size in the data, or "
                          f"data.image_size); set data.image_size to at least {MIN_SIZE}")

    rows, arrays, labels = [], [], []
    for i, im in enumerate(images):
        row = _row(i, im, raw.value_max)
        if im.pixels is not None:
            x = to_uint8(im.pixels, size, channels, raw.value_max)
            arrays.append(x)
            labels.append(im.label)
            row.update(prep_height=x.shape[0], prep_width=x.shape[1], prep_channels=x.shape[2],
                       sha1=hashlib.sha1(x.tobytes()).hexdigest())
        else:
            row.update(prep_height=-1, prep_width=-1, prep_channels=-1, sha1="")
        row["repair"] = "; ".join(_repairs(im, size, channels))
        rows.append(row)
    if not arrays:
        raise GenopsError(f"data.source={data.source!r}: none of the {len(images)} images could be read")

    x_all = np.stack(arrays)
    y_all = np.asarray(labels, dtype=np.int64)
    is_test = stratified_split(y_all, data.test_fraction, seed)
    readable_rows = [r for r in rows if r["readable"]]
    for r, t in zip(readable_rows, is_test):
        r["split"] = "test" if t else "train"
    for r in rows:
        r.setdefault("split", "dropped")

    data_hash = split_hash(x_all, y_all, is_test)
    num_classes = len(raw.class_names) if (y_all >= 0).any() else 0
    spec = DataSpec(size[0], size[1], channels, num_classes, raw.class_names if num_classes else [])

    repairs = repair_summary(rows)
    with atomic_dir(out_dir) as tmp:
        np.savez(tmp / "train.npz", images=x_all[~is_test], labels=y_all[~is_test])
        np.savez(tmp / "test.npz", images=x_all[is_test], labels=y_all[is_test])
        pd.DataFrame(rows).to_csv(tmp / "metadata.csv", index=False)
        write_json_atomic(tmp / "spec.json", {**spec.to_dict(), "n_train": int((~is_test).sum()),
                                               "n_test": int(is_test.sum()), "source": data.source,
                                               "data_hash": data_hash})
        write_json_atomic(tmp / REPAIRS, {kind: {"count": len(files), "files": files}
                                          for kind, files in repairs.items()})
    dropped = len(rows) - len(arrays)
    for kind, files in repairs.items():
        shown = ", ".join(files[:NAMED])
        log.warning("prepare: %s %d of %d images (%s%s; all in metadata.csv, column repair, and the validation "
                    "report; validation.strict: true refuses them)", kind, len(files), len(rows), shown,
                    ", ..." if len(files) > NAMED else "")
    return PrepareResult(spec, int((~is_test).sum()), int(is_test.sum()), dropped, data_hash, repairs)


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

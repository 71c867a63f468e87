"""Extra data sources a family names by role (`FamilyConfig.data_sources`, e.g. CycleGAN's domain B).

Such a source is read with the same readers as `data.source`, converted to the *main* data's shape (data/prepared
spec: size and channels), split with a seeded stratified split, and handed to the family as ImageSets with a
content hash that goes into the training fingerprint and the lineage tags. Every repair (resize, colour
conversion, an unreadable file skipped) is named in the log, never silent. `convert_to_spec` is also what
`genops sample --input DIR` reads a folder with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genops.data.convert import to_uint8
from genops.data.sources import BUILTIN_SOURCES, RawDataset, load_source
from genops.data.spec import DataSpec
from genops.data.split import split_hash, stratified_split
from genops.data.tensors import ImageSet
from genops.errors import GenopsError

log = logging.getLogger(__name__)

MIN_IMAGES = 10  # readable images a domain needs: a test split and a training split of a few batches' worth
NAMED = 5  # files named per repair kind in the log


@dataclass
class Domain:
    """One extra data source in the main data's shape: seeded splits, labels in the main data's classes."""

    role: str
    source: str
    train: ImageSet
    test: ImageSet
    data_hash: str

    def lineage(self) -> dict[str, str]:
        return {"source": self.source, "hash": self.data_hash, "n_train": str(len(self.train)),
                "n_test": str(len(self.test))}


def convert_to_spec(raw: RawDataset, spec: DataSpec, what: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Readable images as uint8 N x H x W x C in `spec`'s size and channels, their labels mapped onto `spec`'s
    class names (-1 where the source is unlabeled or the class is not one of them), and the names of the files
    kept. Each kind of repair is logged once with the files it touched (`what` says whose data it is)."""
    size, channels = (spec.height, spec.width), spec.channels
    names = raw.class_names
    to_main = {i: spec.class_names.index(n) if n in spec.class_names else -1 for i, n in enumerate(names)}
    arrays, labels, kept = [], [], []
    repairs: dict[str, list[str]] = {}
    seen_labels: set[int] = set()
    for im in (im for block in raw.blocks() for im in block):
        seen_labels.add(im.label)
        if im.pixels is None:
            repairs.setdefault(f"skipped unreadable ({im.error.split(':')[0]})", []).append(im.name)
            continue
        h, w, c = im.pixels.shape
        if (h, w) != size:
            repairs.setdefault(f"resized {h}x{w} -> {size[0]}x{size[1]}", []).append(im.name)
        px = im.pixels
        if c == 3 and channels == 1 and not (np.array_equal(px[..., 0], px[..., 1])
                                             and np.array_equal(px[..., 1], px[..., 2])):
            repairs.setdefault("colour converted to grey", []).append(im.name)
        elif c == 1 and channels == 3:
            repairs.setdefault("grey repeated to RGB", []).append(im.name)
        if im.repair:
            repairs.setdefault(im.repair, []).append(im.name)
        arrays.append(to_uint8(im.pixels, size, channels, raw.value_max))
        labels.append(to_main.get(im.label, -1) if im.label >= 0 else -1)
        kept.append(im.name)
    for kind, files in repairs.items():
        log.warning("%s: %s: %d of %d images (%s%s)", what, kind, len(files), len(raw),
                    ", ".join(files[:NAMED]), ", ..." if len(files) > NAMED else "")
    unmapped = sorted({names[y] for y in seen_labels if 0 <= y < len(names)} - set(spec.class_names))
    if unmapped and spec.class_names:
        log.warning("%s: classes %s are not classes of the training data: those images count as unlabeled", what,
                    ", ".join(unmapped[:10]))
    if not arrays:
        return np.zeros((0, *size, channels), np.uint8), np.zeros(0, np.int64), []
    return np.stack(arrays), np.asarray(labels, dtype=np.int64), kept


def load_domain(family: str, role: str, source: str, root: Path, spec: DataSpec, seed: int,
                test_fraction: float) -> Domain:
    """Read `source`, convert it to the main data's spec and split it; a missing, unreadable or too small source
    is a GenopsError naming the key (`FAMILY.ROLE`) and what was expected."""
    key = f"{family}.{role}"
    try:
        raw = load_source(source, root)
    except GenopsError as exc:
        raise GenopsError(f"{key}={source!r}: could not be read as a data source (expected one of "
                          f"{', '.join(BUILTIN_SOURCES)}, a folder of images or an .npz file): {exc}") from None
    with raw:
        images, labels, _ = convert_to_spec(raw, spec, key)
        total = len(raw)
    if len(images) < MIN_IMAGES:
        raise GenopsError(f"{key}={source!r}: {len(images)} readable images of {total}; at least "
                          f"{MIN_IMAGES} are needed (a training and a held-out split)")
    is_test = stratified_split(labels, test_fraction, seed)
    if is_test.all() or not is_test.any():
        raise GenopsError(f"{key}={source!r}: {len(images)} images leave an empty split at test_fraction="
                          f"{test_fraction}")
    data_hash = split_hash(images, labels, is_test, source.encode())

    def image_set(mask: np.ndarray) -> ImageSet:
        return ImageSet(torch.from_numpy(np.ascontiguousarray(images[mask].transpose(0, 3, 1, 2))),
                        torch.from_numpy(labels[mask]))

    domain = Domain(role, source, image_set(~is_test), image_set(is_test), data_hash)
    log.info("%s: %s -> %d train / %d held-out images at %dx%dx%d (hash %s)", key, source, len(domain.train),
             len(domain.test), spec.height, spec.width, spec.channels, domain.data_hash)
    return domain


def attach_domains(family, sources: dict[str, str], root: Path, seed: int, test_fraction: float,
                   expected: dict[str, dict] | None = None) -> dict[str, dict[str, str]]:
    """Load every extra source `sources` names (role -> source) and hand it to `family.attach_data`; returns
    role -> lineage (source, hash, split sizes) for the fingerprint, family.json and the tags. With `expected`
    (what the checkpoint was trained on) a domain whose content changed since is refused."""
    out = {}
    for role, source in sources.items():
        domain = load_domain(family.name, role, source, root, family.spec, seed, test_fraction)
        trained = (expected or {}).get(role)
        if expected is not None and (trained is None or trained.get("hash") != domain.data_hash):
            raise GenopsError(f"{family.name}.{role}={source!r}: its data (hash {domain.data_hash}) is not what the "
                              f"checkpoint was trained on ({(trained or {}).get('hash', 'none recorded')}): re-run "
                              f"`genops train {family.name}`")
        family.attach_data(role, domain.train, domain.test)
        out[role] = domain.lineage()
    return out

"""The seeded train/test split and the content hash of a split dataset, shared by `genops prepare` (the training
data) and the extra data sources a family names (data/domains.py), so both are split and fingerprinted alike."""

from __future__ import annotations

import hashlib

import numpy as np


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of test rows: the same share of every class (unlabeled rows are one class), seeded."""
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for y in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == y))
        is_test[idx[: int(round(len(idx) * test_fraction))]] = True
    return is_test


def split_hash(images: np.ndarray, labels: np.ndarray, is_test: np.ndarray, prefix: bytes = b"") -> str:
    """16 hex digits of sha256 over `prefix`, then train images, train labels, test images, test labels."""
    digest = hashlib.sha256(prefix)
    for arr in (images[~is_test], labels[~is_test], images[is_test], labels[is_test]):
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]

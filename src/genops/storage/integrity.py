"""File hashes recorded when a file is written and checked before it is read: a truncated, bit-flipped or swapped
checkpoint, safetensors file or ONNX graph is refused with its name and what to do, never loaded."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from genops.errors import GenopsError

HASHES = "hashes.json"  # name -> sha256 of the files beside it


class CorruptFile(GenopsError):
    """A file's sha256 is not the one recorded when it was written."""


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def record_hashes(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """Write folder/hashes.json for these files (after they are complete); returns the hashes."""
    hashes = {name: sha256_of(Path(folder) / name) for name in sorted(names)}
    (Path(folder) / HASHES).write_text(json.dumps(hashes, indent=2) + "\n")
    return hashes


def recorded_hashes(folder: Path) -> dict[str, str]:
    path = Path(folder) / HASHES
    return json.loads(path.read_text()) if path.is_file() else {}


def verify(path: Path, expected: str | None, fix: str) -> None:
    """Raise CorruptFile naming `path` unless its sha256 is `expected` (None: nothing was recorded, no check)."""
    if expected is None:
        return
    if not Path(path).is_file():
        raise CorruptFile(f"{path}: missing, though its hash was recorded; {fix}")
    actual = sha256_of(path)
    if actual != expected:
        raise CorruptFile(f"{path}: sha256 {actual[:12]}... differs from {expected[:12]}... recorded when it was "
                          f"written (truncated or changed since); not loaded: {fix}")


def verify_recorded(folder: Path, names: Iterable[str], fix: str) -> None:
    """Check these files of `folder` against its hashes.json (files it does not list are not checked)."""
    hashes = recorded_hashes(folder)
    for name in names:
        verify(Path(folder) / name, hashes.get(name), fix)

"""The prepared .npz files, read and written in pieces: a member memory-mapped in place, a member written from a
stream of row blocks. Both keep memory flat in the number of images (prepare at millions of images, training
memory-mapped).

Why by hand: np.load ignores mmap_mode for .npz archives, and np.savez needs each array whole in memory. An
archive written here is what np.savez writes (uncompressed zip64 members holding .npy files, header 1.0), so
np.load reads it and `member_memmap` maps it.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np


class Layout(NamedTuple):
    """Where an .npy array's data starts in a file, and its shape, memory order and dtype."""

    offset: int
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype


def npy_layout(fh: BinaryIO) -> Layout:
    """The layout of the .npy array whose magic string starts at the file's current position."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    return Layout(fh.tell(), tuple(shape), bool(fortran), dtype)


class ObjectArrayError(ValueError):
    """A member holds pickled Python objects: readers name that case apart from a damaged file."""


def member_layout(path: Path, key: str) -> Layout:
    """The layout of `key` inside an uncompressed .npz, offset counted from the start of the archive.

    np.savez stores each member uncompressed, so a member is a plain .npy file at a fixed offset; this finds that
    offset from the zip's local header (zip64 extras included, via the local header's extra-field length)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path}: {key}.npy is compressed and cannot be memory-mapped (write it with np.savez)")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: no zip local header for {key}.npy")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        layout = npy_layout(fh)
    if layout.dtype.hasobject:
        raise ObjectArrayError(f"{path}: {key}.npy holds Python objects, which are never unpickled")
    return layout


def member_memmap(path: Path, key: str, mode: str = "c") -> np.ndarray:
    """A memory map (copy-on-write by default) of `key` inside an uncompressed .npz."""
    at = member_layout(path, key)
    return np.memmap(path, dtype=at.dtype, mode=mode, offset=at.offset, shape=at.shape,
                     order="F" if at.fortran else "C")


class NpzWriter:
    """Write an uncompressed .npz one member at a time, each from row blocks whose total is declared up front
    (the .npy header holds the shape before the data)."""

    def __init__(self, path: Path):
        self.path = path
        self._zip = zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def add(self, key: str, shape: tuple[int, ...], dtype: np.dtype | type, blocks: Iterable[np.ndarray]) -> None:
        dtype = np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        rows = 0
        with self._zip.open(f"{key}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            for block in blocks:
                if block.shape[1:] != tuple(shape[1:]):
                    raise ValueError(f"{self.path}: {key} block of shape {block.shape} in an array of {shape}")
                fh.write(np.ascontiguousarray(block, dtype=dtype).tobytes())
                rows += len(block)
        if rows != shape[0]:
            raise ValueError(f"{self.path}: {key} declared {shape[0]} rows, {rows} written")

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Writes survive a power cut: a file's data is fsynced before its rename, and its directory after.

A crash of the process is covered by the renames alone; a crash of the machine is not (the new name can point
at data still in the page cache), so the order of fsync and rename calls is what these tests pin down.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from genops.storage import atomic


@pytest.fixture
def events(monkeypatch):
    """Every fsync (as the path its descriptor names) and every rename, in order."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, Path.rename

    def fsync(fd):
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        seen.append(("rename", str(dst)))
        real_replace(src, dst)

    def rename(self, target):
        seen.append(("rename", str(target)))
        return real_rename(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "rename", rename)
    return seen


def _index(events, kind, path) -> int:
    return next(i for i, e in enumerate(events) if e == (kind, str(path)))


def test_a_json_file_is_on_disk_before_its_name_and_its_name_after(tmp_path, events):
    target = tmp_path / "metrics.json"
    atomic.write_json_atomic(target, {"fid": 1.0})
    renamed = _index(events, "rename", target)
    assert any(kind == "fsync" and Path(p).name.startswith(".metrics.json.") for kind, p in events[:renamed])
    assert ("fsync", str(tmp_path)) in events[renamed:]


def test_a_folder_written_whole_has_every_file_synced_before_it_takes_its_name(tmp_path, events):
    dest = tmp_path / "checkpoints" / "vae"
    with atomic.atomic_dir(dest) as out:
        (out / "weights.safetensors").write_bytes(b"x" * 100)
        (out / "sub").mkdir()
        (out / "sub" / "a.json").write_text("{}")
    renamed = _index(events, "rename", dest)
    synced = [Path(p).name for kind, p in events[:renamed] if kind == "fsync"]
    assert {"weights.safetensors", "a.json", "sub"} <= set(synced)
    assert ("fsync", str(dest.parent)) in events[renamed:]
    assert (dest / "sub" / "a.json").read_text() == "{}"


def test_a_training_checkpoint_is_durable(tmp_path, events):
    from genops.data.spec import DataSpec
    from genops.models.registry import build_family
    from genops.training.checkpoint import STATE, TrainState, save_checkpoint

    family = build_family("autoencoder", DataSpec(28, 28, 1, 10), {"widths": [4, 8]})
    save_checkpoint(tmp_path, family, {}, torch.Generator().manual_seed(0), TrainState(3, [], "fp"))
    for name in ("ckpt-000003.safetensors", STATE):
        renamed = _index(events, "rename", tmp_path / name)
        assert ("fsync", str(tmp_path / f".{name}.tmp")) in events[:renamed]
        assert ("fsync", str(tmp_path)) in events[renamed:]

"""prepare streams: its peak memory does not grow with the number of images (before: ~5 KB per image held at once,
5 GB at a million), and the streamed output is what np.savez/np.load agree on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np

from genops.data.npz import member_memmap

SMALL, LARGE = 20_000, 200_000  # 10x the images; at ~5 KB each, holding them all would add ~900 MB


def _source(path, n: int, compressed: bool = False) -> None:
    rng = np.random.default_rng(n)
    save = np.savez_compressed if compressed else np.savez
    save(path, images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), labels=rng.integers(0, 10, n))


def _peak_rss_mb(source, out) -> float:
    """Peak resident memory of a child process that runs prepare (os.wait4: the child's own)."""
    code = ("import sys; from pathlib import Path; from genops.config import validate; "
            "from genops.stages.prepare import prepare_stage; "
            "prepare_stage(validate({'seed': 0, 'data': {'source': sys.argv[1]}, 'train': {'progress': False}}, "
            "'test'), Path(sys.argv[2]), Path(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(source), str(out)], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read().decode()[-2000:]
    return usage.ru_maxrss / 1024


def test_peak_memory_is_flat_in_the_number_of_images(tmp_path):
    _source(tmp_path / "small.npz", SMALL)
    _source(tmp_path / "large.npz", LARGE)
    small = _peak_rss_mb(tmp_path / "small.npz", tmp_path / "a")
    large = _peak_rss_mb(tmp_path / "large.npz", tmp_path / "b")
    # what grows is a few int64s per image (labels, the split); 180k more images may add ~10 MB, not hundreds
    assert large - small < 64, (small, large)
    spec = json.loads((tmp_path / "b" / "spec.json").read_text())
    assert spec["n_train"] + spec["n_test"] == LARGE
    assert not any(p.name.startswith(".") for p in (tmp_path / "b").iterdir())  # the scratch files are gone


def test_streamed_splits_read_back_exactly_with_np_load_and_memory_maps(tmp_path):
    from genops.config import validate
    from genops.stages.prepare import prepare_stage

    _source(tmp_path / "c.npz", 9_000, compressed=True)  # a compressed member is unpacked to a temporary file
    params = validate({"seed": 1, "data": {"source": str(tmp_path / "c.npz"), "test_fraction": 0.2},
                       "train": {"progress": False}}, "test")
    result = prepare_stage(params, tmp_path, tmp_path / "out")
    with np.load(tmp_path / "c.npz") as src:
        everything = src["images"]
    seen = []
    for split in ("train", "test"):
        path = tmp_path / "out" / f"{split}.npz"
        with zipfile.ZipFile(path) as zf:
            assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
        with np.load(path) as npz:
            images, labels = npz["images"], npz["labels"]
        assert np.array_equal(member_memmap(path, "images"), images) and labels.dtype == np.int64
        seen.append(images[..., 0])
    assert (len(seen[0]), len(seen[1])) == (result.n_train, result.n_test) and result.n_train + result.n_test == 9_000
    # every source image lands in exactly one split, unchanged (same size: no resize)
    rows = np.concatenate(seen).reshape(len(everything), -1)
    order = np.lexsort(rows.T[::-1])
    expect = everything.reshape(len(everything), -1)
    assert np.array_equal(rows[order], expect[np.lexsort(expect.T[::-1])])

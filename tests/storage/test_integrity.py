"""Hashes recorded at write time, checked at read time: a damaged bundle or ONNX graph is never loaded."""

from __future__ import annotations

import pytest
import torch

from genops.data.spec import DataSpec
from genops.models.registry import build_family
from genops.serving.onnx_export import export_graph
from genops.serving.onnx_runtime import load_nets
from genops.storage.bundle import WEIGHTS, load_bundle, save_bundle
from genops.storage.integrity import HASHES, CorruptFile, record_hashes


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_bit_flipped_bundle_is_refused_and_names_the_file(tmp_path):
    family = build_family("autoencoder", DataSpec(8, 8, 1, 0), {"latent_dim": 3, "widths": [8]})
    save_bundle(tmp_path, family)
    assert (tmp_path / HASHES).is_file()
    load_bundle(tmp_path)  # intact: loads
    _flip_last_byte(tmp_path / WEIGHTS)
    with pytest.raises(CorruptFile, match=rf"{WEIGHTS}: sha256 .* differs .*not loaded: re-run"):
        load_bundle(tmp_path)
    (tmp_path / WEIGHTS).write_bytes((tmp_path / WEIGHTS).read_bytes()[:50])  # truncated
    with pytest.raises(CorruptFile, match="truncated or changed"):
        load_bundle(tmp_path)


def test_a_damaged_onnx_graph_is_refused_before_a_session_opens(tmp_path):
    torch.manual_seed(0)
    family = build_family("gan", DataSpec(8, 8, 1, 0), {"latent_dim": 4, "widths": [8]})
    family.train_mode(False)
    (spec,) = family.export_specs()
    export_graph(spec, tmp_path / "sampler.onnx", opset=18)
    record_hashes(tmp_path, ["sampler.onnx"])
    assert load_nets(tmp_path, ["sampler"])
    _flip_last_byte(tmp_path / "sampler.onnx")
    with pytest.raises(CorruptFile, match=r"sampler.onnx: sha256 .*re-run `genops export`"):
        load_nets(tmp_path, ["sampler"])

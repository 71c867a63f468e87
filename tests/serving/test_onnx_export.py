"""ONNX export: every family's graphs match torch in ONNX Runtime, and a mismatch is refused loudly."""

from __future__ import annotations

import pytest
import torch

from genops.config import FAMILIES
from genops.data.spec import DataSpec
from genops.errors import ExportParityError
from genops.models.registry import build_family
from genops.serving.onnx_export import check_parity, export_graph
from genops.serving.onnx_runtime import OrtNet, load_nets, make_session
from tests.models.extra_data import attach_synthetic_data


def _tiny(name: str, **cfg) -> dict:
    """The family's declared test sizes (its config class's `sizes`), with `cfg` over them."""
    return {**FAMILIES[name].config.sized("tiny"), **cfg}


@pytest.mark.parametrize("name,conditional", [(n, False) for n in sorted(FAMILIES)] + [("vae", True)])
def test_graphs_and_whole_sampler_match_torch(tmp_path, name, conditional):
    torch.manual_seed(0)
    spec = DataSpec(12, 12, 3, 4)
    base_name = FAMILIES[name].base  # a stacked family (latent diffusion) is built on its base family's model
    base = build_family(base_name, spec, _tiny(base_name)) if base_name else None
    family = attach_synthetic_data(build_family(name, spec, _tiny(name, conditional=conditional), base=base))
    family.train_mode(False)
    for graph in family.export_specs():
        path = tmp_path / f"{graph.name}.onnx"
        export_graph(graph, path, opset=18)
        assert check_parity(graph, path, atol=1e-4, seed=0) <= 1e-4
    nets = load_nets(tmp_path, list(family.sampling_nets()))
    assert all(net.providers[0] == ("CUDAExecutionProvider" if torch.cuda.is_available() else
                                    "CPUExecutionProvider") for net in nets.values())
    ref = family.sample(7, torch.Generator().manual_seed(3))  # batch 7: not the export example's batch
    got = family.sample(7, torch.Generator().manual_seed(3), nets=nets)
    assert (ref - got).abs().max() <= 1e-3


def test_parity_gate_rejects_a_graph_that_disagrees(tmp_path):
    torch.manual_seed(0)
    family = build_family("vae", DataSpec(8, 8, 1, 0), {"latent_dim": 4, "widths": [8]})
    graph = family.export_specs()[0]
    export_graph(graph, tmp_path / "sampler.onnx", opset=18)
    with torch.no_grad():
        for p in family.decoder.parameters():
            p.add_(0.1)  # torch now differs from what was exported
    with pytest.raises(ExportParityError, match="differs from torch"):
        check_parity(graph, tmp_path / "sampler.onnx", atol=1e-4, seed=0)
    assert OrtNet(make_session(tmp_path / "sampler.onnx")).input_names == ["noise"]

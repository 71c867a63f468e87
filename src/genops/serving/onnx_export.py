"""Exporting a family's graphs to ONNX and the parity gate: ONNX Runtime must reproduce torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from genops.errors import ExportParityError
from genops.models.family import ExportSpec
from genops.serving.onnx_runtime import OrtNet, make_session


def export_graph(spec: ExportSpec, path: Path, opset: int) -> None:
    """torch.export (dynamo) -> one self-contained .onnx file with a dynamic batch dimension
    (plus any axes named in `spec.dynamic_dims`)."""
    dims = {"batch": torch.export.Dim("batch", min=1, max=4096)}
    dynamic = []
    for name, t in zip(spec.input_names, spec.example_inputs):
        axes = {0: dims["batch"]}
        for axis, dim_name in spec.dynamic_dims.get(name, {}).items():
            dims.setdefault(dim_name, torch.export.Dim(dim_name, min=1, max=int(t.shape[axis])))
            axes[axis] = dims[dim_name]
        dynamic.append(axes)
    dynamic = tuple(dynamic)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(spec.module.eval(), spec.example_inputs, dynamo=True, opset_version=opset,
                                    input_names=spec.input_names, output_names=spec.output_names,
                                    dynamic_shapes=dynamic, verbose=False)
    program.save(str(path), external_data=False)


def parity_inputs(spec: ExportSpec, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Fixed inputs shaped like the example but with another batch size (exercises the dynamic axis)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in spec.example_inputs:
        shape = (batch, *t.shape[1:])
        if t.dtype.is_floating_point:
            out.append(torch.rand(shape, generator=gen) if t.min() >= 0 else torch.randn(shape, generator=gen))
        else:
            out.append(torch.randint(0, max(int(t.max()) + 1, 2), shape, generator=gen, dtype=t.dtype))
    return tuple(out)


def check_parity(spec: ExportSpec, path: Path, atol: float, seed: int) -> float:
    net = OrtNet(make_session(path))
    inputs = parity_inputs(spec, 5, seed)
    with torch.no_grad():
        expected = spec.module(*inputs)
    got = net(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    diff = max(float((e.float().cpu() - g.float()).abs().max()) for e, g in zip(expected, got))
    if not diff <= atol:
        raise ExportParityError(f"{path.name}: ONNX Runtime output differs from torch by {diff:.3g} "
                                f"(max abs diff allowed: {atol:g}); the export is rejected")
    return diff

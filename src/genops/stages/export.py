"""export: write each family graph to ONNX and gate on ONNX Runtime / torch parity."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from genops.bundle import load_bundle
from genops.errors import ExportParityError
from genops.fsutil import atomic_dir, write_json_atomic
from genops.models.base import ExportSpec
from genops.paths import ProjectPaths

log = logging.getLogger(__name__)


def export_graph(spec: ExportSpec, path: Path, opset: int) -> None:
    """torch.export (dynamo) -> one self-contained .onnx file with a dynamic batch dimension
    (plus any axes named in `spec.dynamic_dims`)."""
    import warnings

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
    from genops.serving.onnx_runtime import OrtNet, make_session

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


def export_stage(family_name: str, params: dict, root: Path) -> dict:
    import mlflow

    from genops.serving.onnx_runtime import load_nets
    from genops.stages.common import evaluation_config, family_run
    from genops.stages.evaluate import sampling_speed

    paths = ProjectPaths(root)
    cfg = params.get("export", {})
    atol, opset = float(cfg.get("atol", 1e-4)), int(cfg.get("opset", 18))
    seed = int(params.get("evaluate", {}).get("seed", 1234))
    family = load_bundle(paths.checkpoint(family_name), "cpu")  # export from CPU: graphs are device-neutral
    specs = family.export_specs()
    graphs = {}
    with atomic_dir(paths.exported(family_name)) as out:
        for spec in specs:
            t0 = time.perf_counter()
            path = out / f"{spec.name}.onnx"
            export_graph(spec, path, opset)
            np.savez(out / f"{spec.name}.example.npz",
                     **{n: t.numpy() for n, t in zip(spec.input_names, spec.example_inputs)})
            diff = check_parity(spec, path, atol, seed)
            graphs[spec.name] = {"inputs": spec.input_names, "outputs": spec.output_names,
                                 "max_abs_diff": diff, "export_s": round(time.perf_counter() - t0, 3)}
            log.info("export %s/%s: parity max|diff| = %.2e", family_name, spec.name, diff)
        nets = load_nets(out, list(family.sampling_nets()))
        # The whole sampler (loop included) through ORT must reproduce the torch sampler's images.
        n = 8
        ref = family.sample(n, torch.Generator().manual_seed(seed))
        got = family.sample(n, torch.Generator().manual_seed(seed), nets=nets)
        sampler_diff = float((ref - got).abs().max())
        sampler_atol = float(cfg.get("sampler_atol", 1e-3))
        if not sampler_diff <= sampler_atol:
            raise ExportParityError(f"{family_name}: ONNX sampler images differ from torch by {sampler_diff:.3g} "
                                    f"(allowed {sampler_atol:g}); the export is rejected")
        ecfg = evaluation_config(params, family_name)
        speed = sampling_speed(family, int(ecfg.get("speed_samples", 256)), int(ecfg.get("batch_size", 256)),
                               seed, nets=nets)
        result = {"family": family_name, "opset": opset, "atol": atol, "graphs": graphs,
                  "sampler_max_abs_diff": sampler_diff, "providers": next(iter(nets.values())).providers,
                  "sample_images_per_s_onnx": round(speed["images_per_s"], 3),
                  "sample_batch1_latency_ms_onnx": round(speed["batch1_latency_ms"], 4)}
        write_json_atomic(out / "export.json", result)
    # The speed numbers also go to a DVC metrics file so `dvc metrics show` and the comparison see them.
    write_json_atomic(paths.root / "metrics" / "export" / f"{family_name}.json",
                      {k: result[k] for k in ("sample_images_per_s_onnx", "sample_batch1_latency_ms_onnx",
                                              "sampler_max_abs_diff")})
    with family_run(root, paths, family_name):
        mlflow.log_metrics({"sample_images_per_s_onnx": result["sample_images_per_s_onnx"],
                            "sample_batch1_latency_ms_onnx": result["sample_batch1_latency_ms_onnx"],
                            "onnx_max_abs_diff": max(g["max_abs_diff"] for g in graphs.values())})
    return result

"""export: write each family graph to ONNX and gate on ONNX Runtime / torch parity."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import torch

from genops.config import Params
from genops.errors import ExportParityError
from genops.evaluation.sampling import sampling_speed
from genops.models.family import ExportSpec, Family
from genops.serving.onnx_export import check_parity, export_graph
from genops.serving.onnx_runtime import load_nets
from genops.storage.atomic import atomic_dir, write_json_atomic
from genops.storage.bundle import load_bundle
from genops.storage.integrity import record_hashes
from genops.storage.paths import ProjectPaths
from genops.tracking.runs import family_run

log = logging.getLogger(__name__)

SAMPLER_CHECK_IMAGES = 8


def export_stage(family_name: str, params: Params, root: Path) -> dict:
    paths, cfg = ProjectPaths(root), params.export
    seed = params.evaluate.seed
    family = load_bundle(paths.checkpoint(family_name), "cpu")  # export from CPU: graphs are device-neutral
    with atomic_dir(paths.exported(family_name)) as out:
        specs = family.export_specs()
        graphs = {spec.name: _export_checked(family_name, spec, out, specs, cfg.opset, cfg.atol, seed)
                  for spec in specs}
        nets = load_nets(out, list(family.sampling_nets()))
        sampler_diff = _check_sampler(family, nets, seed, cfg.sampler_atol)
        ecfg = params.evaluation(family_name)
        speed = sampling_speed(family, ecfg.speed_samples, ecfg.batch_size, seed, nets=nets)
        result = {"family": family_name, "opset": cfg.opset, "atol": cfg.atol, "graphs": graphs,
                  "sampler_max_abs_diff": sampler_diff, "providers": next(iter(nets.values())).providers,
                  "sample_images_per_s_onnx": round(speed["images_per_s"], 3),
                  "sample_batch1_latency_ms_onnx": round(speed["batch1_latency_ms"], 4)}
        write_json_atomic(out / "export.json", result)
    # The speed numbers also go to a DVC metrics file so `dvc metrics show` and the comparison see them.
    write_json_atomic(paths.export_metrics(family_name),
                      {k: result[k] for k in ("sample_images_per_s_onnx", "sample_batch1_latency_ms_onnx",
                                              "sampler_max_abs_diff")})
    with family_run(root, paths, family_name):
        mlflow.log_metrics({"sample_images_per_s_onnx": result["sample_images_per_s_onnx"],
                            "sample_batch1_latency_ms_onnx": result["sample_batch1_latency_ms_onnx"],
                            "onnx_max_abs_diff": max(g["max_abs_diff"] for g in graphs.values())})
    return result


def _export_checked(family_name: str, spec: ExportSpec, out: Path, specs: list[ExportSpec], opset: int, atol: float,
                    seed: int) -> dict:
    """Export one graph with its example inputs, record the hashes of the graphs so far, check ORT parity."""
    t0 = time.perf_counter()
    path = out / f"{spec.name}.onnx"
    export_graph(spec, path, opset)
    record_hashes(out, [f"{s.name}.onnx" for s in specs if (out / f"{s.name}.onnx").is_file()])
    np.savez(out / f"{spec.name}.example.npz", **{n: t.numpy() for n, t in zip(spec.input_names, spec.example_inputs)})
    diff = check_parity(spec, path, atol, seed)
    log.info("export %s/%s: parity max|diff| = %.2e", family_name, spec.name, diff)
    return {"inputs": spec.input_names, "outputs": spec.output_names, "max_abs_diff": diff,
            "export_s": round(time.perf_counter() - t0, 3)}


def _check_sampler(family: Family, nets: dict, seed: int, atol: float) -> float:
    """The whole sampler (loop included) through ORT must reproduce the torch sampler's images."""
    ref = family.sample(SAMPLER_CHECK_IMAGES, torch.Generator().manual_seed(seed))
    got = family.sample(SAMPLER_CHECK_IMAGES, torch.Generator().manual_seed(seed), nets=nets)
    diff = float((ref - got).abs().max())
    if not diff <= atol:
        raise ExportParityError(f"{family.name}: ONNX sampler images differ from torch by {diff:.3g} "
                                f"(allowed {atol:g}); the export is rejected")
    return diff

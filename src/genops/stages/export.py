"""export: write each family graph to ONNX and gate on ONNX Runtime / torch parity."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from genops.config import Params
from genops.errors import ExportParityError
from genops.storage.atomic import atomic_dir, write_json_atomic
from genops.storage.bundle import load_bundle
from genops.storage.integrity import record_hashes
from genops.storage.paths import ProjectPaths

log = logging.getLogger(__name__)


def export_stage(family_name: str, params: Params, root: Path) -> dict:
    import mlflow

    from genops.evaluation.sampling import sampling_speed
    from genops.serving.onnx_export import check_parity, export_graph
    from genops.serving.onnx_runtime import load_nets
    from genops.tracking.runs import family_run

    paths = ProjectPaths(root)
    cfg = params.export
    atol, opset = cfg.atol, cfg.opset
    seed = params.evaluate.seed
    family = load_bundle(paths.checkpoint(family_name), "cpu")  # export from CPU: graphs are device-neutral
    specs = family.export_specs()
    graphs = {}
    with atomic_dir(paths.exported(family_name)) as out:
        for spec in specs:
            t0 = time.perf_counter()
            path = out / f"{spec.name}.onnx"
            export_graph(spec, path, opset)
            record_hashes(out, [f"{s.name}.onnx" for s in specs if (out / f"{s.name}.onnx").is_file()])
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
        sampler_atol = cfg.sampler_atol
        if not sampler_diff <= sampler_atol:
            raise ExportParityError(f"{family_name}: ONNX sampler images differ from torch by {sampler_diff:.3g} "
                                    f"(allowed {sampler_atol:g}); the export is rejected")
        ecfg = params.evaluation(family_name)
        speed = sampling_speed(family, ecfg.speed_samples, ecfg.batch_size, seed, nets=nets)
        result = {"family": family_name, "opset": opset, "atol": atol, "graphs": graphs,
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

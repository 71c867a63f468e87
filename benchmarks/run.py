"""Speed benchmarks -> benchmarks/results.json (targets are read from here, never asserted in tests).

    python benchmarks/run.py                # CLI start-up, no-op dvc repro, train/sample speed per family
    python benchmarks/run.py --smoke        # also time a fresh `genops pipeline --smoke`

Stage wall times and orchestration overhead come from the last flow runs' reports/pipeline_run.json
(the default run in the project root and the smoke run in .genops/smoke).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGETS = {"help_s": 0.5, "noop_dvc_repro_s": 1.5, "smoke_pipeline_s": 180, "orchestration_overhead_fraction": 0.05}


def _timed(cmd: list[str], cwd: Path, repeat: int) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_speed(name: str, params: dict, data, steps: int = 30) -> dict:
    import contextlib

    from genops.models.base import StepContext
    from genops.models.registry import build_family
    from genops.training.loop import BatchSchedule

    torch.manual_seed(0)
    family = build_family(name, params, _spec(data))
    opts = family.make_optimizers(1e-3)
    bs = int(params["train"]["batch_size"])
    sched = BatchSchedule(len(data), bs, 0)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps + 5):
        if step == 5:
            t0 = time.perf_counter()
        family.train_step(data.batch(sched.indices(step)), StepContext(step, opts, contextlib.nullcontext, gen))
    wall = time.perf_counter() - t0
    return {"train_images_per_s": steps * bs / wall, "batch_size": bs, "num_parameters": family.num_parameters(),
            "family": family}


def sample_speed(family, batch: int = 64, reps: int = 5) -> dict:
    from genops.serving.onnx_runtime import load_nets
    from genops.stages.export import export_graph

    family.train_mode(False)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in family.export_specs():
            export_graph(spec, Path(tmp) / f"{spec.name}.onnx", 18)
        backends = {"torch": None, "onnx": load_nets(Path(tmp), list(family.sampling_nets()))}
        for backend, nets in backends.items():
            for n, key in ((batch, f"sample_images_per_s_{backend}_b{batch}"), (1, f"batch1_latency_ms_{backend}")):
                family.sample(n, torch.Generator().manual_seed(0), nets=nets)
                t0 = time.perf_counter()
                for _ in range(reps):
                    family.sample(n, torch.Generator().manual_seed(0), nets=nets)
                dt = (time.perf_counter() - t0) / reps
                out[key] = n / dt if n > 1 else dt * 1000
        out["onnx_speedup_b64"] = out[f"sample_images_per_s_onnx_b{batch}"] / out[f"sample_images_per_s_torch_b{batch}"]
    return out


def _spec(data):
    from genops.data.spec import DataSpec

    return DataSpec(data.images.shape[2], data.images.shape[3], data.images.shape[1], 10)


def _flow_report(path: Path) -> dict | None:
    if not path.is_file():
        return None
    run = json.loads(path.read_text())
    return {"flow_wall_s": run["flow_wall_s"], "stage_compute_s": run["stage_compute_s"],
            "overhead_s": run["overhead_s"], "overhead_fraction": run["overhead_fraction"],
            "stages": {s["stage"]: s.get("wall_s", s["status"]) for s in run["stages"]}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="time a fresh `genops pipeline --smoke` too")
    args = parser.parse_args()
    from genops.config import all_families, load_params
    from genops.data.tensors import load_split
    from genops.stages.prepare import prepare

    params = load_params(ROOT)
    results: dict = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                                 "python": platform.python_version(), "cuda": torch.cuda.is_available()},
                     "targets": TARGETS, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    results["help_s"] = _timed([str(BIN / "genops"), "--help"], ROOT, 5)
    if (ROOT / "dvc.lock").is_file():
        results["noop_dvc_repro_s"] = _timed([str(BIN / "dvc"), "repro"], ROOT, 3)
    families = {}
    with tempfile.TemporaryDirectory() as tmp:
        prepare(params, ROOT, Path(tmp) / "prepared")
        data = load_split(Path(tmp) / "prepared", "train")
        for name in all_families(params):
            speed = train_speed(name, params, data)
            family = speed.pop("family")
            families[name] = {**speed, **sample_speed(family)}
            print(name, json.dumps(families[name], indent=1), flush=True)
    results["families"] = families
    if args.smoke:
        shutil.rmtree(ROOT / ".genops" / "smoke", ignore_errors=True)
        results["smoke_pipeline_s"] = _timed([str(BIN / "genops"), "-q", "pipeline", "--smoke"], ROOT, 1)
    results["default_flow"] = _flow_report(ROOT / "reports" / "pipeline_run.json")
    results["smoke_flow"] = _flow_report(ROOT / ".genops" / "smoke" / "reports" / "pipeline_run.json")
    out = ROOT / "benchmarks" / "results.json"
    out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

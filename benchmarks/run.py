"""Speed benchmarks -> benchmarks/results.json (targets are read from here, never asserted in tests).

    python benchmarks/run.py                # CLI start-up, no-op dvc repro, train/sample speed per family
    python benchmarks/run.py --smoke        # also time a fresh `genops pipeline --smoke`
    python benchmarks/run.py --families diffusion,latent-diffusion   # a subset

Per family: training images/s, FLOPs per training image (genops.training.budget's count over real train_steps,
backward and double backward included: what train.budget divides) and the achieved FLOP/s as a share of this
machine's fp32 matmul peak, measured in the same run; sampling images/s at batch 64 through torch and through
ONNX Runtime (the same sampler loop, the nets swapped) and batch-1 latency. Quality-against-speed of the
diffusion samplers (DDPM-T vs DDIM-S) is read from the last default run's metrics/FAMILY.json
(FID needs trained weights).

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
TARGETS = {"help_s": 0.5, "noop_dvc_repro_s": 1.5, "smoke_pipeline_s": 180, "orchestration_overhead_fraction": 0.05,
           "diffusion_train_flops_share_of_peak": 0.5, "diffusion_onnx_speedup_b64": 1.5}


def _timed(cmd: list[str], cwd: Path, repeat: int) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _dvc_clean() -> bool:
    proc = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=ROOT, capture_output=True, text=True)
    return proc.returncode == 0 and json.loads(proc.stdout or "{}") == {}


def matmul_peak_flops(n: int = 2048, seconds: float = 3.0) -> float:
    """Best fp32 FLOP/s of an n x n matmul on this machine (the denominator of the utilisation share)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def train_speed(name: str, params, data, steps: int = 30) -> dict:
    import contextlib

    from genops.config import FAMILIES
    from genops.models.capabilities import FitsData
    from genops.models.family import StepContext
    from genops.models.registry import instantiate
    from genops.training.budget import flops_per_step
    from genops.training.loop import BatchSchedule

    torch.manual_seed(0)
    spec = _spec(data)
    base_name = FAMILIES[name].base  # speed only: an untrained base of the configured shape will do
    base = instantiate(base_name, params.family(base_name), spec) if base_name else None
    family = instantiate(name, params.family(name), spec, base)
    if isinstance(family, FitsData):
        family.on_train_start(data, 256)
    lr = params.family(name).learning_rate(params.train.lr)
    opts = family.make_optimizers(lr)
    bs = params.train.batch_size
    total = 10 * steps
    sched = BatchSchedule(len(data), bs, 0)
    gen = torch.Generator().manual_seed(0)
    # The count the train stage turns train.budget into steps with (forward, backward, double backward).
    flops_per_image = flops_per_step(family, data.batch(sched.indices(0)), lr, 0) / bs
    for step in range(1, steps + 5):
        if step == 5:
            t0 = time.perf_counter()
        family.train_step(data.batch(sched.indices(step)), StepContext(step, total, opts, contextlib.nullcontext, gen))
    wall = time.perf_counter() - t0
    rate = steps * bs / wall
    return {"train_images_per_s": rate, "batch_size": bs, "num_parameters": family.num_parameters(),
            "train_flops_per_image": flops_per_image,
            "train_flops_per_s": flops_per_image * rate if flops_per_image else None, "family": family}


def _time_sampler(family, n: int, nets, budget_s: float = 20.0, max_reps: int = 5) -> float:
    """Seconds per call of family.sample(n): repeated until max_reps or the time budget is spent."""
    times: list[float] = []
    while len(times) < max_reps and sum(times) < budget_s:
        t0 = time.perf_counter()
        family.sample(n, torch.Generator().manual_seed(len(times)), nets=nets)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sample_speed(family, batch: int = 64) -> dict:
    from genops.serving.onnx_export import export_graph
    from genops.serving.onnx_runtime import load_nets

    family.train_mode(False)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in family.export_specs():
            export_graph(spec, Path(tmp) / f"{spec.name}.onnx", 18)
        backends = {"torch": None, "onnx": load_nets(Path(tmp), list(family.sampling_nets()))}
        for backend, nets in backends.items():
            family.sample(2, torch.Generator().manual_seed(0), nets=nets)  # warm-up
            out[f"sample_s_per_{batch}_{backend}"] = _time_sampler(family, batch, nets)
            out[f"sample_images_per_s_{backend}_b{batch}"] = batch / out[f"sample_s_per_{batch}_{backend}"]
            out[f"batch1_latency_ms_{backend}"] = _time_sampler(family, 1, nets) * 1000
        out["onnx_speedup_b64"] = out[f"sample_images_per_s_onnx_b{batch}"] / out[f"sample_images_per_s_torch_b{batch}"]
    return out


def sampler_tradeoff(name: str) -> dict | None:
    """FID and images/s per sampling variant (DDPM-T, DDIM-S) from the last default run's metrics."""
    path = ROOT / "metrics" / f"{name}.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    variants = sorted({k[:-4] for k in metrics if k.endswith("_fid") and f"{k[:-4]}_images_per_s" in metrics})
    if not variants:
        return None
    return {v: {"fid": metrics[f"{v}_fid"], "images_per_s": metrics[f"{v}_images_per_s"],
                "samples": metrics.get(f"{v}_samples")} for v in variants}


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
    parser.add_argument("--families", default=None, help="comma-separated subset (default: all in params.yaml)")
    args = parser.parse_args()
    from genops.config import apply_overrides, dump, load_params, validate
    from genops.data.tensors import load_split
    from genops.stages.prepare import prepare_stage

    params = load_params(ROOT)
    results: dict = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                                 "python": platform.python_version(), "cuda": torch.cuda.is_available()},
                     "targets": TARGETS, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    results["help_s"] = _timed([str(BIN / "genops"), "--help"], ROOT, 5)
    if (ROOT / "dvc.lock").is_file() and _dvc_clean():  # else `dvc repro` would run the pipeline, not time a no-op
        results["noop_dvc_repro_s"] = _timed([str(BIN / "dvc"), "repro"], ROOT, 3)
    results["matmul_fp32_peak_flops"] = peak = matmul_peak_flops()
    families = {}
    selected = args.families.split(",") if args.families else params.all_families()
    with tempfile.TemporaryDirectory() as tmp:
        prepare_stage(params, ROOT, Path(tmp) / "prepared")
        data = load_split(Path(tmp) / "prepared", "train")
        for name in selected:
            speed = train_speed(name, params, data)
            family = speed.pop("family")
            families[name] = {**speed, **sample_speed(family)}
            tradeoff = sampler_tradeoff(name)
            if tradeoff:
                families[name]["sampler_tradeoff_from_last_run"] = tradeoff
            print(name, json.dumps(families[name], indent=1), flush=True)
    results["families"] = families
    # The peak drifts on a shared VM: take the best of a second measurement too, so shares are conservative.
    results["matmul_fp32_peak_flops"] = peak = max(peak, matmul_peak_flops())
    for entry in families.values():
        entry["train_flops_share_of_peak"] = entry["train_flops_per_s"] / peak if entry["train_flops_per_s"] else None
    if "diffusion" in selected:  # how the U-Net's utilisation depends on its width (small convs are inefficient)
        sweep = {}
        with tempfile.TemporaryDirectory() as tmp:
            prepare_stage(params, ROOT, Path(tmp) / "prepared")
            data = load_split(Path(tmp) / "prepared", "train")
            for widths in ([16, 32], [32, 64], [64, 128]):
                wide = validate(apply_overrides(dump(params), {"diffusion.widths": widths}), "width sweep")
                speed = train_speed("diffusion", wide, data, steps=6)
                speed.pop("family")
                sweep[str(widths)] = {k: speed[k] for k in ("train_images_per_s", "train_flops_per_image",
                                                             "train_flops_per_s")}
                sweep[str(widths)]["train_flops_share_of_peak"] = speed["train_flops_per_s"] / peak
                print("diffusion widths", widths, json.dumps(sweep[str(widths)]), flush=True)
        results["diffusion_width_sweep"] = sweep
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

"""The CUDA path, checked in minutes -> benchmarks/gpu_check.json (run through benchmarks/gpu_check.sh).

Every family at the GPU profile's sizes trains a few hundred steps on CUDA (bf16 autocast, channels-last,
losses read at logging intervals; diffusion once more with torch.compile), is exported to ONNX from CPU,
and ONNX Runtime on the CUDA provider (I/O binding) must reproduce torch: every graph on fixed inputs and
the whole sampler's images. Throughputs (training images/s, sampling images/s through torch and ORT) go
to the JSON. `--device cpu --steps 3 --sizes smoke` dry-runs the same code on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _data(spec_size: int = 28):
    from genops.data.sources import load_source
    from genops.data.tensors import ImageSet

    with load_source("mnist5k", ROOT) as raw:
        every = [im for block in raw.blocks() for im in block]
    images = np.stack([im.pixels for im in every]).astype(np.uint8).transpose(0, 3, 1, 2)
    labels = np.asarray([im.label for im in every], np.int64)
    return ImageSet(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))


def _params(sizes: str):
    from genops.config import Params, apply_overrides, dump, validate
    from genops.config.params import GPU_PROFILE, SMOKE

    return validate(apply_overrides(dump(Params()), GPU_PROFILE if sizes == "gpu" else SMOKE), sizes)


def check_family(name: str, params, data, device: torch.device, steps: int, base, work: Path,
                 compile_: bool = False) -> tuple[dict, object]:
    from genops.data.spec import DataSpec
    from genops.evaluation.sampling import sampling_speed
    from genops.models.capabilities import FitsData
    from genops.models.registry import instantiate
    from genops.serving.onnx_export import check_parity, export_graph
    from genops.serving.onnx_runtime import load_nets
    from genops.training.loop import LoopSettings, train

    spec = DataSpec(28, 28, 1, 10)
    cfg, tcfg = params.family(name), params.train
    torch.manual_seed(0)
    family = instantiate(name, cfg, spec, base)
    loop = LoopSettings(steps=steps, batch_size=tcfg.batch_size, lr=cfg.learning_rate(tcfg.lr),
                        checkpoint_every=10**9, log_every=min(tcfg.log_every, steps), seed=0, max_loss=tcfg.max_loss,
                        progress=False, compile=compile_, channels_last=tcfg.channels_last)
    family.to(device)
    if isinstance(family, FitsData):
        family.on_train_start(data, loop.batch_size * 2)
    result = train(family, data, loop, work / f"{name}-ckpt", "gpu-check", device)
    if isinstance(family, FitsData):
        family.on_train_end(data, loop.batch_size * 2)
    row: dict = {"parameters": family.num_parameters(), "steps": steps, "batch_size": loop.batch_size,
                 "compile": compile_, "train_images_per_s": round(result.images_per_s, 1),
                 "final_losses": {k: round(v, 4) for k, v in result.history[-1].items() if k != "step"}}
    if compile_:
        return row, family
    ecfg = params.evaluation(name)
    n_speed = min(ecfg.speed_samples, 512)
    family.train_mode(False)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    row["sample_images_per_s_torch"] = round(sampling_speed(family, n_speed, ecfg.batch_size, 0)["images_per_s"], 1)
    family.to(torch.device("cpu"))  # export from CPU, as the export stage does: graphs are device-neutral
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    row["graphs"] = {}
    for spec_ in family.export_specs():
        path = out / f"{spec_.name}.onnx"
        t0 = time.perf_counter()
        export_graph(spec_, path, params.export.opset)
        row["graphs"][spec_.name] = {"max_abs_diff": check_parity(spec_, path, params.export.atol, 0),
                                     "export_s": round(time.perf_counter() - t0, 2)}
    nets = load_nets(out, list(family.sampling_nets()))
    row["ort_providers"] = next(iter(nets.values())).providers
    ref = family.sample(8, torch.Generator().manual_seed(0))
    got = family.sample(8, torch.Generator().manual_seed(0), nets=nets)
    row["sampler_max_abs_diff"] = float((ref - got.cpu()).abs().max())
    row["sampler_parity_ok"] = row["sampler_max_abs_diff"] <= params.export.sampler_atol
    row["sample_images_per_s_ort"] = round(sampling_speed(family, n_speed, ecfg.batch_size, 0, nets=nets)
                                           ["images_per_s"], 1)
    family.to(device)
    return row, family


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sizes", choices=("gpu", "smoke"), default="gpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_check.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device visible to torch; nothing measured")
    params, data = _params(args.sizes), _data()
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "sizes": args.sizes, "families": {}}
    import onnxruntime as ort

    report["onnxruntime"] = ort.__version__
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trained: dict = {}
        for name in ["autoencoder", "vae", "gan", "wgan-gp", "diffusion", "pixelcnn", "vqvae", "latent-diffusion"]:
            t0 = time.perf_counter()
            base = trained.get("vae") if name == "latent-diffusion" else None
            try:
                row, family = check_family(name, params, data, device, args.steps, base, work)
                trained[name] = family
            except Exception as exc:  # a failing family is reported, the others still run
                row = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            report["families"][name] = row
            print(name, json.dumps(row), flush=True)
        try:
            row, _ = check_family("diffusion", params, data, device, args.steps, None, work, compile_=True)
        except Exception as exc:
            row = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        report["diffusion_compiled"] = row
    report["wall_s"] = round(time.perf_counter() - t_all, 1)
    report["all_parity_ok"] = all(r.get("sampler_parity_ok") for r in report["families"].values())
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "families"}, indent=2))


if __name__ == "__main__":
    main()

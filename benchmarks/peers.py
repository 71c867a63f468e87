"""Our diffusion family against diffusers' own DDPM recipe at equal wall-clock -> benchmarks/peers.json.

    pip install -e .[bench]                                  # diffusers, pinned in pyproject.toml
    python benchmarks/peers.py                               # a temporary workspace, 6 minutes each
    python benchmarks/peers.py --workspace . --minutes 6 --samples 500 --seed 0

The peer is huggingface diffusers' unconditional DDPM training recipe (examples/unconditional_image_generation,
train_unconditional): a `UNet2DModel` built from a config here (random init, nothing is downloaded), AdamW at
lr 1e-4 (betas 0.95/0.999, weight decay 1e-6) with a 500-step linear warm-up into a cosine decay, eps-prediction
MSE, gradient-norm clip 1, `DDPMScheduler` with 1000 linear betas and diffusers' `EMAModel` (warm-up, power 3/4,
max decay 0.9999), sized like its small-image configs (~1.1M parameters at 28x28). Ours is `diffusion` with the
workspace's params.yaml, driven step by step through `Family.train_step` as the pipeline's loop does.

Both train on the workspace's prepared training split (pixels in [-1, 1] for both), batch 64, the same batch order,
one after the other with the same torch threads, for `--minutes` each: the first 20 steps measure the step rate,
which fixes each one's step budget (the peer's cosine schedule needs it); training stops at that budget or when the
minutes are spent. Both then sample `--samples` images with DDIM 50 steps, eta 0, from their EMA weights (ours: our
default sampler; the peer: `DDIMPipeline` with a `DDIMScheduler` made from the DDPM config) and are scored by the
workspace's evaluator (`SampleScorer`: FID, KID, precision/recall, density/coverage, modes). Sampling images/s at
batch 64: ours through torch and ONNX Runtime (the denoiser exported, the loop outside), the peer's pipeline (torch).

Without `--workspace` (or with one naming a folder that has no params.yaml) a workspace is made from this project's
params.yaml with `genops prepare`, `validate` and `evaluator` (temporary, or kept in that folder for later runs);
`--set KEY=VALUE` applies to those stages and to our family's params.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
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
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUT = ROOT / "benchmarks" / "peers.json"
CALIBRATION_STEPS = 20  # steps that measure each contender's step rate (timed from step 5 on)

# diffusers' train_unconditional defaults (the recipe), except the U-Net, which is sized for small images below.
RECIPE = {"learning_rate": 1e-4, "adam_betas": (0.95, 0.999), "adam_weight_decay": 1e-6, "adam_epsilon": 1e-8,
          "lr_scheduler": "cosine", "lr_warmup_steps": 500, "grad_clip": 1.0, "ddpm_num_steps": 1000,
          "ddpm_beta_schedule": "linear", "prediction_type": "epsilon", "ema_max_decay": 0.9999,
          "ema_inv_gamma": 1.0, "ema_power": 0.75, "use_ema_warmup": True}
# ~1.1M parameters at 28x28 (1 channel): three levels (28 -> 14 -> 7) with attention at the lowest one (and in
# the mid block, as UNet2DModel always has); a fourth level would not divide 7.
PEER_UNET = {"block_out_channels": (32, 64, 64), "layers_per_block": 1,
             "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
             "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), "norm_num_groups": 32,
             "attention_head_dim": 8}
DOWNSAMPLE = 2 ** (len(PEER_UNET["block_out_channels"]) - 1)  # image sides must divide by this: else padded


def _env(root: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "GENOPS_ROOT": str(root)}
    for key in ("DVC_ROOT", "GENOPS_PARAMS_FILE", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    return env


def make_workspace(dest: Path, overrides: list[str]) -> Path:
    """A genops project in `dest` from this project's params.yaml, with prepare, validate and evaluator run."""
    shutil.copy(ROOT / "params.yaml", dest / "params.yaml")
    sets = [a for s in overrides for a in ("--set", s)]
    for stage in ("prepare", "validate", "evaluator"):
        t0 = time.perf_counter()
        proc = subprocess.run([str(BIN / "genops"), "-q", stage, *sets], cwd=dest, env=_env(dest),
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"genops {stage} failed in {dest}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        print(f"workspace: genops {stage} done in {time.perf_counter() - t0:.1f} s", flush=True)
    return dest


# --- equal-time training ---------------------------------------------------------------------------------


def _busy_jiffies() -> tuple[int, int] | None:
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def others_busy(when: str, window_s: float = 1.0) -> float | None:
    """CPU cores other processes keep busy, measured over `window_s` while this one sleeps (Linux /proc/stat);
    warns when it is more than a third of a core: equal-time numbers then say more about the neighbours."""
    first = _busy_jiffies()
    time.sleep(window_s)
    second = _busy_jiffies()
    if first is None or second is None or second[1] == first[1]:
        return None
    cores = (second[0] - first[0]) / (second[1] - first[1]) * (os.cpu_count() or 1)
    if cores > 0.33:
        print(f"WARNING {when}: other processes keep {cores:.1f} of {os.cpu_count()} cores busy: the timings "
              "are unreliable (run this on an idle machine)", flush=True)
    return round(cores, 2)


def train_for(name: str, seconds: float, step, on_budget=None) -> dict:
    """Call step(i, budget) -> loss until the step budget or `seconds` is reached. The budget is fixed after
    CALIBRATION_STEPS steps from their measured rate (before that, `budget` is None)."""
    busy_before = others_busy(f"{name} training")
    losses: list[float] = []
    rate = None
    budget: int | None = None
    t0 = time.perf_counter()
    last_print, t5 = t0, None
    i = 0
    while True:
        now = time.perf_counter()
        if now - t0 >= seconds or (budget is not None and i >= budget):
            break
        losses.append(step(i, budget))
        i += 1
        if i == 5:
            t5 = time.perf_counter()
        if i == CALIBRATION_STEPS:
            rate = (CALIBRATION_STEPS - 5) / (time.perf_counter() - t5)
            budget = max(i, i + int((seconds - (time.perf_counter() - t0)) * rate))
            print(f"{name}: {rate:.2f} steps/s over steps 5-{i}: step budget {budget} for {seconds:.0f} s",
                  flush=True)
            if on_budget:
                on_budget(budget)
        if time.perf_counter() - last_print >= 15:
            last_print = time.perf_counter()
            recent = statistics.fmean(losses[-50:])
            print(f"{name}: step {i}/{budget or '?'}  loss {recent:.4f}  {last_print - t0:.0f}/{seconds:.0f} s",
                  flush=True)
    wall = time.perf_counter() - t0
    return {"train_steps": i, "step_budget": budget if budget is not None else i, "train_wall_s": round(wall, 2),
            "calibrated_steps_per_s": rate, "final_loss": statistics.fmean(losses[-50:]) if losses else None,
            "others_busy_cores_before": busy_before, "others_busy_cores_after": others_busy(f"after {name} training")}


def train_ours(params, spec, data, seconds: float, seed: int) -> tuple[object, dict]:
    from genops.models.capabilities import FitsData
    from genops.models.family import StepContext
    from genops.models.registry import instantiate
    from genops.training.loop import BatchSchedule

    torch.manual_seed(seed)
    cfg, bs = params.family("diffusion"), params.train.batch_size
    family = instantiate("diffusion", cfg, spec)
    if isinstance(family, FitsData):
        family.on_train_start(data, bs * 2)
    opts = family.make_optimizers(cfg.learning_rate(params.train.lr))
    schedule = BatchSchedule(len(data), bs, seed)
    gen = torch.Generator().manual_seed(seed + 17)
    family.train_mode(True)

    def step(i: int, budget: int | None) -> float:  # total_steps: a placeholder until calibrated (diffusion's
        ctx = StepContext(i, budget or 10**6, opts, contextlib.nullcontext, gen)  # warm-up reads only the step)
        return float(family.train_step(data.batch(schedule.indices(i)), ctx)["loss"])

    result = train_for("ours", seconds, step)
    if isinstance(family, FitsData):
        family.on_train_end(data, bs * 2)
    family.train_mode(False)
    result.update(batch_size=schedule.batch_size, images_seen=result["train_steps"] * schedule.batch_size,
                  num_parameters=family.num_parameters(), learning_rate=cfg.learning_rate(params.train.lr),
                  warmup_steps=cfg.warmup_steps, ema_decay_max=cfg.ema_decay, ema_warmup=cfg.ema_warmup)
    return family, result


def peer_unet(spec):
    from diffusers import UNet2DModel

    side = (_padded(spec.height), _padded(spec.width))
    return UNet2DModel(sample_size=side[0] if side[0] == side[1] else side, in_channels=spec.channels,
                       out_channels=spec.channels, **PEER_UNET)


def _padded(n: int) -> int:
    return -(-n // DOWNSAMPLE) * DOWNSAMPLE


def _to_peer(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> [-1, 1], padded with the background (-1) to sides the U-Net can halve."""
    x = x01 * 2 - 1
    h, w = x.shape[-2:]
    return F.pad(x, (0, _padded(w) - w, 0, _padded(h) - h), value=-1.0)


def train_peer(spec, data, seconds: float, seed: int, batch_size: int, warmup: int) -> tuple[object, dict]:
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from genops.training.loop import BatchSchedule

    torch.manual_seed(seed)
    unet = peer_unet(spec)
    noise_scheduler = DDPMScheduler(num_train_timesteps=RECIPE["ddpm_num_steps"],
                                    beta_schedule=RECIPE["ddpm_beta_schedule"],
                                    prediction_type=RECIPE["prediction_type"])
    opt = torch.optim.AdamW(unet.parameters(), lr=RECIPE["learning_rate"], betas=RECIPE["adam_betas"],
                            weight_decay=RECIPE["adam_weight_decay"], eps=RECIPE["adam_epsilon"])
    # Provisional schedule for the calibration steps (identical to the real one while step < warm-up), then the
    # real one with the measured step budget, caught up to the steps already taken.
    lr_sched = [get_scheduler(RECIPE["lr_scheduler"], optimizer=opt, num_warmup_steps=warmup,
                              num_training_steps=10**9)]

    def on_budget(budget: int) -> None:
        lr_sched[0] = get_scheduler(RECIPE["lr_scheduler"], optimizer=opt, num_warmup_steps=warmup,
                                    num_training_steps=budget)
        for _ in range(CALIBRATION_STEPS):
            lr_sched[0].step()

    ema = EMAModel(unet.parameters(), decay=RECIPE["ema_max_decay"], use_ema_warmup=RECIPE["use_ema_warmup"],
                   inv_gamma=RECIPE["ema_inv_gamma"], power=RECIPE["ema_power"], model_cls=type(unet),
                   model_config=unet.config)
    schedule = BatchSchedule(len(data), batch_size, seed)
    gen = torch.Generator().manual_seed(seed + 17)
    T = noise_scheduler.config.num_train_timesteps
    unet.train()

    def step(i: int, budget: int | None) -> float:
        clean = _to_peer(data.batch(schedule.indices(i)).x)
        noise = torch.randn(clean.shape, generator=gen)
        timesteps = torch.randint(0, T, (clean.shape[0],), generator=gen)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        pred = unet(noisy, timesteps, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), RECIPE["grad_clip"])
        opt.step()
        lr_sched[0].step()
        opt.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        return float(loss.detach())

    result = train_for("peer", seconds, step, on_budget)
    ema_unet = copy.deepcopy(unet)
    ema.copy_to(ema_unet.parameters())
    ema_unet.eval()
    result.update(batch_size=schedule.batch_size, images_seen=result["train_steps"] * schedule.batch_size,
                  num_parameters=sum(p.numel() for p in unet.parameters()), learning_rate=RECIPE["learning_rate"],
                  warmup_steps=warmup, warmup_share_of_steps=warmup / max(1, result["train_steps"]),
                  final_lr=opt.param_groups[0]["lr"], ema_decay_max=RECIPE["ema_max_decay"],
                  ema_decay_final=ema.cur_decay_value)
    return (ema_unet, noise_scheduler), result


# --- sampling and scoring ------------------------------------------------------------------------------------


def peer_pipeline(unet, noise_scheduler):
    from diffusers import DDIMPipeline

    pipe = DDIMPipeline(unet=unet, scheduler=noise_scheduler)  # converts the DDPM config to a DDIMScheduler
    pipe.set_progress_bar_config(disable=True)
    return pipe


def peer_sample(pipe, n: int, generator: torch.Generator, spec, steps: int = 50) -> torch.Tensor:
    """n images in [0, 1] (padding cropped) from the DDIM pipeline, eta 0."""
    out = pipe(batch_size=n, generator=generator, eta=0.0, num_inference_steps=steps, output_type="pt").images
    return out[:, :, : spec.height, : spec.width].cpu()


def peer_sample_set(pipe, n: int, seed: int, batch_size: int, spec) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        out.append(peer_sample(pipe, min(batch_size, n - start), gen, spec))
        print(f"peer: sampled {start + out[-1].shape[0]}/{n}", flush=True)
    return torch.cat(out)


def seconds_per_call(fn, budget_s: float, max_reps: int = 3) -> float:
    """Median seconds of fn() after one warm-up call, repeated up to max_reps or the time budget."""
    fn()
    times: list[float] = []
    while len(times) < max_reps and sum(times) < budget_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speeds(family, pipe, spec, opset: int, batch: int, budget_s: float) -> dict:
    from genops.serving.onnx_export import export_graph
    from genops.serving.onnx_runtime import load_nets

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec_ in family.export_specs():
            export_graph(spec_, Path(tmp) / f"{spec_.name}.onnx", opset)
        nets = {"torch": None, "onnx": load_nets(Path(tmp), list(family.sampling_nets()))}
        for backend, net in nets.items():
            s = seconds_per_call(lambda net=net: family.sample(batch, torch.Generator().manual_seed(0), nets=net,
                                                               progress=False), budget_s)
            out[f"ours_{backend}"] = batch / s
            print(f"speed: ours via {backend}: {batch / s:.1f} images/s at batch {batch}", flush=True)
    s = seconds_per_call(lambda: peer_sample(pipe, batch, torch.Generator().manual_seed(0), spec), budget_s)
    out["peer_torch"] = batch / s
    print(f"speed: peer pipeline (torch): {batch / s:.1f} images/s at batch {batch}", flush=True)
    return out


SCORE_KEYS = ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage", "classifier_score",
              "modes_covered", "modes_total", "largest_mode_share")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, default=None,
                        help="genops project where prepare, validate and evaluator have run; a folder without "
                        "params.yaml is made into one (and kept); default: a temporary one")
    parser.add_argument("--minutes", type=float, default=6.0, help="training wall-clock minutes per contender")
    parser.add_argument("--samples", type=int, default=500, help="samples per contender for the scores")
    parser.add_argument("--seed", type=int, default=0, help="init, batch order and training noise of both")
    parser.add_argument("--sample-seed", type=int, default=0, help="sampling noise of both")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    parser.add_argument("--peer-warmup", type=int, default=RECIPE["lr_warmup_steps"],
                        help="the peer's learning-rate warm-up steps (the recipe's 500)")
    parser.add_argument("--speed-budget", type=float, default=20.0, help="seconds of timed sampling per backend")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="params override for a temporary workspace's stages and our family (repeatable)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"result JSON (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args()

    import diffusers

    from genops.config import load_params
    from genops.data.spec import DataSpec
    from genops.data.tensors import load_split
    from genops.evaluation.features import load_evaluator
    from genops.evaluation.sampling import SampleScorer, sample_set
    from genops.storage.paths import ProjectPaths
    from genops.validation.gate import require_validated

    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = args.minutes * 60
    with contextlib.ExitStack() as stack:
        if args.workspace is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="genops-peers-")))
            print(f"workspace: creating {tmp}", flush=True)
            workspace = make_workspace(tmp, args.overrides)
        elif not (args.workspace / "params.yaml").is_file():  # a new folder: made there, and kept
            args.workspace.mkdir(parents=True, exist_ok=True)
            print(f"workspace: creating {args.workspace}", flush=True)
            workspace = make_workspace(args.workspace.resolve(), args.overrides)
        else:
            workspace = args.workspace.resolve()
        paths = ProjectPaths(workspace)
        params = load_params(workspace, args.overrides)
        spec = DataSpec.from_dict(require_validated(paths))
        train = load_split(paths.prepared, "train", params.data.in_memory_max_mb)
        net, meta = load_evaluator(paths)
        floor = json.loads(paths.evaluator_metrics.read_text()) if paths.evaluator_metrics.is_file() else {}
        print(f"data: {len(train)} training images {spec.height}x{spec.width}x{spec.channels}; "
              f"{torch.get_num_threads()} torch threads; {args.minutes:g} min each", flush=True)

        family, ours = train_ours(params, spec, train, seconds, args.seed)
        print("ours:", json.dumps(ours), flush=True)
        (unet, noise_scheduler), peer = train_peer(spec, train, seconds, args.seed, params.train.batch_size,
                                                   args.peer_warmup)
        print("peer:", json.dumps(peer), flush=True)

        cfg = params.evaluation("diffusion")
        scorer = SampleScorer(net, meta, train, cfg)
        pipe = peer_pipeline(unet, noise_scheduler)
        t0 = time.perf_counter()
        ours_images = sample_set(family, args.samples, args.sample_seed, cfg.batch_size)
        ours["score_sampling_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        peer_images = peer_sample_set(pipe, args.samples, args.sample_seed, cfg.batch_size, spec)
        peer["score_sampling_s"] = round(time.perf_counter() - t0, 2)
        for entry, images in ((ours, ours_images), (peer, peer_images)):
            with torch.no_grad():
                scores = scorer(images)
            entry.update({k: v for k, v in scores.items() if k.split("_low")[0].split("_high")[0] in SCORE_KEYS})
        print(f"scores: ours FID {ours['fid']:.2f}, peer FID {peer['fid']:.2f} ({args.samples} samples each)",
              flush=True)
        busy_speed = others_busy("sampling speed")
        speed = speeds(family, pipe, spec, params.export.opset, 64, args.speed_budget)

    ours.update(sample_images_per_s_torch_b64=speed["ours_torch"], sample_images_per_s_onnx_b64=speed["ours_onnx"],
                sampler=f"ours: {params.diffusion.sample_method} {params.diffusion.sample_steps} steps, "
                        f"eta {params.diffusion.eta}, EMA weights",
                config={k: getattr(params.diffusion, k) for k in ("widths", "depth", "attention_levels",
                                                                  "timesteps", "schedule", "prediction")})
    peer.update(sample_images_per_s_torch_b64=speed["peer_torch"],
                sampler="diffusers DDIMPipeline: DDIMScheduler from the DDPM config, 50 steps, eta 0, EMA weights",
                config={"unet": {k: list(v) if isinstance(v, tuple) else v for k, v in PEER_UNET.items()},
                        "sample_size": unet.config.sample_size,
                        "recipe": {**RECIPE, "lr_warmup_steps": args.peer_warmup}})
    results = {
        "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "diffusers": diffusers.__version__, "python": platform.python_version(),
                    "cuda": torch.cuda.is_available(), "others_busy_cores_before_speed": busy_speed},
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "workspace": "temporary" if args.workspace is None
        else str(workspace), "minutes": args.minutes, "samples": args.samples, "seed": args.seed,
        "sample_seed": args.sample_seed, "feature_space": meta["kind"], "n_reference": cfg.n_reference,
        "floor": {k: v for k, v in floor.items() if k.startswith("floor_")},
        "ours": ours, "peer": peer,
        "fid_ratio_ours_over_peer": ours["fid"] / peer["fid"],
        "speed_ratio_ours_onnx_over_peer": speed["ours_onnx"] / speed["peer_torch"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(json.dumps({k: results[k] for k in ("fid_ratio_ours_over_peer", "speed_ratio_ours_onnx_over_peer")}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

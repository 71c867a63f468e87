"""Serving a registered version over REST -> benchmarks/serving.json (or --out).

A fresh clone trains, evaluates and registers the default-size diffusion model (few training steps: the serving
cost depends on the network and the sampler, not on how long it trained), then `mlflow models serve` builds the
version's own environment (`--env-manager virtualenv`: its requirements.txt from the package index, genops only
as the version's code copy) and answers requests. Measured: the environment's build time and size, and
requests/s and latency at 1 and 4 concurrent clients, with 1 and 2 uvicorn workers.

Run: `.venv/bin/python benchmarks/serving.py` (CPU, about 10 minutes on 2 cores). On a GPU machine, which reaches
no package index, `--env-manager local --requirements cuda` serves from the project's own environment (CUDA
torch and onnxruntime-gpu[cuda,cudnn]) and ONNX Runtime's CUDA provider (benchmarks/gpu_check.sh does this).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "models:/genops-diffusion@champion"
# Default sizes; a short training run and a small evaluation (the variants of 1000-step DDPM etc. are skipped).
TRAIN_SETS = ["diffusion.steps=40", "stacked={}", "diffusion.eval_ddpm=false", "diffusion.eval_steps=[10]",
              "diffusion.evaluate.n_samples=64", "diffusion.evaluate.variant_samples=32",
              "diffusion.evaluate.speed_samples=16", "evaluate.curve_samples=32", "evaluate.inpaint_samples=16",
              "train.snapshots=[]", "train.progress=false", "sweeps=[]"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int, path: str, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2)
            return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited {proc.returncode}") from None
            time.sleep(1)
    raise SystemExit(f"no answer on :{port}{path} after {seconds} s")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _request(port: int, n: int, seed: int) -> float:
    body = json.dumps({"dataframe_records": [{"n": n, "seed": seed}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:
        assert resp.status == 200
        json.loads(resp.read())
    return time.perf_counter() - t0


def _load(port: int, clients: int, requests: int, n: int) -> dict:
    _request(port, n, 10_000)  # warm-up: session and thread pools
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(lambda s: _request(port, n, s), range(requests)))
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": requests, "images_per_request": n,
            "requests_per_s": round(requests / wall, 3), "images_per_s": round(requests * n / wall, 2),
            "latency_p50_s": round(statistics.median(latencies), 3), "latency_max_s": round(max(latencies), 3)}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-manager", default="virtualenv", choices=("virtualenv", "local"))
    parser.add_argument("--requirements", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--n", type=int, default=8, help="images per request (default 50 DDIM steps each)")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "serving.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genops-serving-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        clone = work / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "GENOPS_ROOT", "DVC_ROOT")}
        env.update({"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "DVC_NO_ANALYTICS": "1",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(work / "prefect")})
        sets = [*TRAIN_SETS, f"serving.requirements={args.requirements}"]
        t0 = time.perf_counter()
        cmd = [str(BIN / "genops"), "-q", "pipeline", "--families", "diffusion"]
        for s in sets:
            cmd += ["--set", s]
        subprocess.run(cmd, cwd=clone, env=env, check=True, stdout=subprocess.DEVNULL)
        report: dict = {"model": MODEL, "env_manager": args.env_manager, "requirements": args.requirements,
                        "pipeline_s": round(time.perf_counter() - t0, 1), "pipeline_sets": sets}
        store = f"sqlite:///{clone / 'mlflow.db'}"
        tracking_port = _port()
        tracking = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", store, "--host",
                                     "127.0.0.1", "--port", str(tracking_port), "--workers", "1"], cwd=work, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(tracking)
        _wait(tracking_port, "/health", tracking, 120)
        envs = work / "envs"
        serve_env = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{tracking_port}", "MLFLOW_ENV_ROOT": str(envs)}
        report["runs"] = []
        for workers in (int(w) for w in args.workers.split(",")):
            port = _port()
            t0 = time.perf_counter()
            log = work / f"serve-{workers}.log"
            with open(log, "w") as out:
                server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", MODEL, "--env-manager",
                                           args.env_manager, "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)],
                                          cwd=work, env=serve_env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
            procs.append(server)
            _wait(port, "/ping", server, 1200)
            said = [line for line in log.read_text().splitlines() if "ONNX Runtime providers=" in line]
            report.setdefault("providers", said[-1].split("providers=")[1].split(",")[0] if said else "unknown")
            if "environment_build_s" not in report and args.env_manager != "local":
                (venv,) = [p for p in envs.iterdir() if p.name.startswith("mlflow-")]
                report["environment_build_s"] = round(time.perf_counter() - t0, 1)  # incl. model download, start
                report["environment_bytes"] = _du(venv)
                report["environment_gib"] = round(report["environment_bytes"] / 2**30, 2)
            for clients in (1, 4):
                row = {"workers": workers, **_load(port, clients, args.requests, args.n)}
                report["runs"].append(row)
                print(json.dumps(row), flush=True)
            _stop(server)
            procs.remove(server)
        report["cpu_count"] = os.cpu_count()
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

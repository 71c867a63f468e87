"""Team-stack timings -> benchmarks/stack.json: stack start-up, and the same smoke pipeline (vae + latent
diffusion) embedded (scratch SQLite MLflow, temporary Prefect server) vs against the stack (MLflow server on
PostgreSQL + S3, Prefect server on PostgreSQL). Run: `.venv/bin/python benchmarks/stack.py`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is a script folder: reuse the tests' fresh-project helper

from tests.conftest import env_for, make_project  # noqa: E402

BIN = Path(sys.executable).parent


def _timed(cmd: list[str], cwd: Path, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return round(time.perf_counter() - t0, 2)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="genops-stack-bench-"))
    os.chmod(work, 0o755)
    env = {k: v for k, v in env_for(work, work).items() if not k.startswith(("MLFLOW_", "PREFECT_API"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    stack_dir = work / "stack"
    result: dict = {}
    try:
        t0 = time.perf_counter()
        up = json.loads(subprocess.run([str(BIN / "genops"), "-q", "stack", "up", "--dir", str(stack_dir),
                                        "--free-ports", "--no-worker"], cwd=work, env=env, check=True,
                                       capture_output=True, text=True).stdout)
        result["stack_up_s"] = round(time.perf_counter() - t0, 2)
        result["service_startup_s"] = up["service_startup_s"]
        stack_env = {**env}
        for line in (stack_dir / "stack.env").read_text().splitlines():
            if line.startswith("export "):
                k, v = line[len("export "):].split("=", 1)
                stack_env[k] = v
        smoke = ["genops", "-q", "pipeline", "--smoke", "--set", "train.steps=40"]
        for name, extra, e in (("embedded", [], env), ("stack", ["--shared-tracking"], stack_env)):
            proj = make_project(work / name, {"families": ["vae"], "stacked": {"latent-diffusion": "vae"},
                                              "train.progress": False})
            result[f"smoke_{name}_s"] = _timed([str(BIN / smoke[0]), *smoke[1:], *extra], proj, e)
            print(name, result[f"smoke_{name}_s"], flush=True)
    finally:
        subprocess.run([str(BIN / "genops"), "-q", "stack", "down", "--dir", str(stack_dir)], cwd=work, env=env,
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    result["note"] = "smoke = genops pipeline --smoke --set train.steps=40, families vae + latent-diffusion"
    out = ROOT / "benchmarks" / "stack.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

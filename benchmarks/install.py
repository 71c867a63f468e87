"""Install size and time of each extra set, in fresh virtual environments -> benchmarks/install.json.

    .venv/bin/python benchmarks/install.py            # default, default+dask+playwright (the old default), all

Each environment is created with `python3 -m venv` and filled with `pip install -c constraints.txt .[EXTRAS]` from a
fresh clone of HEAD (pip's wheel cache is warm after the first, so later times are mostly unpacking); its size is
`du` of the environment. The default environment then runs `genops pipeline --smoke` in that clone, which shows
that `pip install .` alone is enough to run the pipeline.
"""

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
OUT = ROOT / "benchmarks" / "install.json"
SETS = {"default": ".", "before (default + dask + playwright)": ".[dask] playwright",
        "everything (dev, stack, dask)": ".[dev,stack,dask]"}


def _du_mb(path: Path) -> float:
    return round(int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True,
                                    check=True).stdout.split()[0]) / 1024, 1)


def install(clone: Path, venv: Path, spec: str) -> dict:
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, cwd=clone)
    t0 = time.perf_counter()
    proc = subprocess.run([*pip, "-c", "constraints.txt", *spec.split()], cwd=clone, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"pip install {spec} failed:\n{proc.stderr[-3000:]}")
    freeze = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze"], capture_output=True, text=True)
    return {"pip_install_s": round(wall, 1), "size_mb": _du_mb(venv),
            "distributions": len(freeze.stdout.splitlines())}


def smoke(clone: Path, venv: Path) -> dict:
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(clone / ".prefect-home"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{clone / 'mlflow.db'}"}
    for key in ("GENOPS_ROOT", "DVC_ROOT", "PREFECT_API_URL", "VIRTUAL_ENV"):
        env.pop(key, None)
    t0 = time.perf_counter()
    proc = subprocess.run([str(venv / "bin" / "genops"), "pipeline", "--smoke"], cwd=clone, env=env,
                          capture_output=True, text=True)
    out = {"exit": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode:
        out["stderr"] = proc.stderr[-1500:]
    else:
        summary = json.loads(proc.stdout)
        out["stages_ran"] = sum(1 for s in summary["stages"] if s.get("status") == "ran")
        out["failed"] = summary["failed"]
    return out


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="genops-install-"))
    results: dict = {"commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                              text=True).stdout.strip(), "python": sys.version.split()[0]}
    try:
        clone = work / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        for i, (name, spec) in enumerate(SETS.items()):
            venv = work / f"venv{i}"
            results[name] = {"spec": spec, **install(clone, venv, spec)}
            if name == "default":
                results[name]["smoke"] = smoke(clone, venv)
            print(name, json.dumps(results[name])[:500], flush=True)
            shutil.rmtree(venv, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

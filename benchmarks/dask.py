"""Stage fan-out timings -> benchmarks/dask.json: the smoke pipeline of four families (autoencoder, vae, gan,
wgan-gp) with the local runner, and with Dask LocalClusters of 1 and 2 workers (one torch thread per stage),
each in a fresh clone. Run: `.venv/bin/python benchmarks/dask.py` (smoke sizes, all three configurations) or
`--full --configs dask_1_worker,dask_2_workers` (default sizes: a 1-worker run had not finished after 35
minutes on 2 CPU cores, so budget an hour or more per configuration). Results are kept per size in
benchmarks/dask.json."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAMILIES = "autoencoder,vae,gan,wgan-gp"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="default sizes instead of --smoke")
    parser.add_argument("--configs", default="local,dask_1_worker,dask_2_workers")
    args = parser.parse_args()
    wanted = args.configs.split(",")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "GENOPS_ROOT", "DVC_ROOT"):
        env.pop(key, None)
    size = "default" if args.full else "smoke"
    out = ROOT / "benchmarks" / "dask.json"
    everything = json.loads(out.read_text()) if out.is_file() else {}
    if "size" in everything:  # the earlier single-size layout
        everything = {everything.pop("size"): everything}
    results = {**everything.get(size, {}), "families": FAMILIES, "threads_per_stage": 1}
    work = Path(tempfile.mkdtemp(prefix="genops-dask-bench-"))
    try:
        for name, sets in (("local", ["orchestration.runner=local"]),
                           ("dask_1_worker", ["orchestration.runner=dask", "orchestration.dask.n_workers=1"]),
                           ("dask_2_workers", ["orchestration.runner=dask", "orchestration.dask.n_workers=2"])):
            if name not in wanted:
                continue
            clone = work / name
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            (clone / ".genops" / "prefect").mkdir(parents=True)
            cmd = [str(BIN / "genops"), "-q", "pipeline", "--families", FAMILIES, *(["--smoke"] if not args.full
                                                                                    else [])]
            for s in [*sets, "train.progress=false"]:
                cmd += ["--set", s]
            t0 = time.perf_counter()
            out = subprocess.run(cmd, cwd=clone, env={**env, "PREFECT_HOME": str(clone / ".genops" / "prefect")},
                                 capture_output=True, text=True, check=True).stdout
            summary = json.loads(out)
            results[name] = {"wall_s": round(time.perf_counter() - t0, 1), "flow_wall_s": summary["flow_wall_s"],
                             "stage_compute_s": summary["stage_compute_s"], "overhead_s": summary["overhead_s"]}
            print(name, results[name], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    everything[size] = results
    out.write_text(json.dumps(everything, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

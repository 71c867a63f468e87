"""ONNX Runtime sessions that look like torch networks to the samplers.

onnxruntime-gpu lists the CUDA provider (and get_device() says "GPU") even on machines with no
GPU, so the CUDA provider is requested only when torch really sees a CUDA device, and the
session's actual providers are checked after creation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from genops.errors import GenopsError

log = logging.getLogger(__name__)


def gpu_present() -> bool:
    return torch.cuda.is_available()


def make_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Spinning worker threads starve torch running in the same process on small machines.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    wanted = ["CPUExecutionProvider"]
    if gpu_present() and "CUDAExecutionProvider" in ort.get_available_providers():
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels (the `cuda` extra)
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
    if wanted[0] not in session.get_providers():
        raise GenopsError(f"{path}: ONNX Runtime could not use {wanted[0]} (got {session.get_providers()})")
    return session


class OrtNet:
    """Call an ORT session with torch tensors (positional, in graph input order); get torch tensors back."""

    def __init__(self, session) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, *args: torch.Tensor):
        if len(args) != len(self.input_names):
            raise GenopsError(f"ONNX graph expects inputs {self.input_names}, got {len(args)} tensors")
        feeds = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in zip(self.input_names, args)}
        outs = [torch.from_numpy(o) for o in self.session.run(self.output_names, feeds)]
        return outs[0] if len(outs) == 1 else tuple(outs)


def load_nets(folder: Path, names: list[str], threads: int | None = None) -> dict[str, OrtNet]:
    nets = {}
    for name in names:
        path = Path(folder) / f"{name}.onnx"
        if not path.is_file():
            raise GenopsError(f"{path} is missing: run `genops export` first")
        nets[name] = OrtNet(make_session(path, threads))
    return nets

"""ONNX Runtime sessions that look like torch networks to the samplers.

onnxruntime-gpu lists the CUDA provider (and get_device() says "GPU") even on machines with no
GPU, so the CUDA provider is requested only when torch really sees a CUDA device, and the
session's actual providers are checked after creation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from genops.errors import GenopsError
from genops.storage.integrity import verify_recorded

log = logging.getLogger(__name__)


def gpu_present() -> bool:
    return torch.cuda.is_available()


def make_session(path: Path, threads: int | None = None):
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


_NUMPY_DTYPES = {torch.float32: np.float32, torch.int64: np.int64, torch.float16: np.float16}


class OrtNet:
    """Call an ORT session with torch tensors (positional, in graph input order); get torch tensors back.

    On the CUDA provider the call goes through I/O binding: CUDA inputs are bound by pointer and outputs
    written straight into preallocated CUDA tensors, so a sampler loop (hundreds of calls) never copies
    through host memory. Output shapes are learned once per input-shape signature. On the CPU provider a
    plain `run` with numpy views is already copy-free.
    """

    def __init__(self, session) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.on_cuda = session.get_providers()[0] == "CUDAExecutionProvider"
        self._out_shapes: dict[tuple, list[tuple[int, ...]]] = {}

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def __call__(self, *args: torch.Tensor):
        if len(args) != len(self.input_names):
            raise GenopsError(f"ONNX graph expects inputs {self.input_names}, got {len(args)} tensors")
        if self.on_cuda:
            outs = self._run_bound([t.detach() for t in args])
        else:
            feeds = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in zip(self.input_names, args)}
            outs = [torch.from_numpy(o) for o in self.session.run(self.output_names, feeds)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _run_bound(self, args: list[torch.Tensor]) -> list[torch.Tensor]:
        device = torch.device("cuda", torch.cuda.current_device())
        args = [t.to(device).contiguous() for t in args]
        key = tuple((tuple(t.shape), t.dtype) for t in args)
        binding = self.session.io_binding()
        for name, t in zip(self.input_names, args):
            binding.bind_input(name, "cuda", device.index, _NUMPY_DTYPES[t.dtype], tuple(t.shape), t.data_ptr())
        if key not in self._out_shapes:  # first call with these shapes: let ORT allocate, remember the shapes
            for name in self.output_names:
                binding.bind_output(name, "cuda", device.index)
            self.session.run_with_iobinding(binding)
            outs = [torch.from_numpy(o).to(device) for o in binding.copy_outputs_to_cpu()]
            self._out_shapes[key] = [tuple(o.shape) for o in outs]
            return outs
        outs = [torch.empty(shape, dtype=torch.float32, device=device) for shape in self._out_shapes[key]]
        for name, o in zip(self.output_names, outs):
            binding.bind_output(name, "cuda", device.index, np.float32, tuple(o.shape), o.data_ptr())
        torch.cuda.synchronize(device)  # inputs written by torch streams must be ready for ORT's stream
        self.session.run_with_iobinding(binding)
        return outs


def load_nets(folder: Path, names: list[str], threads: int | None = None) -> dict[str, OrtNet]:
    """ORT sessions of these graphs, each checked against the sha256 that export recorded beside it."""
    nets = {}
    for name in names:
        path = Path(folder) / f"{name}.onnx"
        if not path.is_file():
            raise GenopsError(f"{path} is missing: run `genops export` first")
        verify_recorded(folder, [path.name], "re-run `genops export` (or `dvc pull` / `dvc checkout` it)")
        nets[name] = OrtNet(make_session(path, threads))
    return nets

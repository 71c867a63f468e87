"""A registered version as a runnable generator: the sampler loop around the ONNX graphs, driven by a request.

`Generator` is what both `genops sample` (ONNX backend) and the registry's pyfunc model run, so the same request
with the same seed gives the same images either way. A request is one row per call: `n` images, a `seed`, and
the family's sampling options (`label` for class-conditional families; `steps`, `method`, `eta`, `guidance`
where the family samples with them). Bad requests are refused naming the column and what was expected; a served
request is also refused, before any work, when it asks for more images or network passes than its
`RequestLimits` allow.

With a GPU (torch sees CUDA and ONNX Runtime's CUDA provider loads) the graphs run on the CUDA provider through
I/O binding and the sampler loop keeps its tensors on the GPU; noise is still drawn on the CPU from the seed, so
the request's images do not depend on where they were made beyond floating-point rounding.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException

from genops.errors import GenopsError
from genops.models.capabilities import Inpaints, Translates
from genops.models.family import SAMPLE_OPTION_TYPES
from genops.models.registry import family_class
from genops.serving.images import to_uint8
from genops.serving.onnx_runtime import load_nets
from genops.storage.bundle import FAMILY_JSON, REGISTRY_BUNDLE, load_bundle
from genops.storage.integrity import verify_recorded

BUNDLE = REGISTRY_BUNDLE  # the pyfunc artifact (a folder) holding family.json, the graphs, weights, hashes.json
LIMIT_ENV = {"max_images": "GENOPS_SERVE_MAX_IMAGES", "max_work": "GENOPS_SERVE_MAX_WORK"}


@dataclass(frozen=True)
class RequestLimits:
    """What one served request may ask for: images (sum of n over its rows) and work (sum of n x the network
    passes one image needs). A served endpoint must not be asked for unbounded work in one call."""

    max_images: int
    max_work: int

    @classmethod
    def from_model_config(cls, config: Mapping | None) -> RequestLimits:
        """The limits the version was registered with (its MLflow model config, from params `serving`), each
        overridden by its environment variable (GENOPS_SERVE_MAX_IMAGES, GENOPS_SERVE_MAX_WORK) where it is served."""
        config = dict(config or {})
        values = {}
        for key, env in LIMIT_ENV.items():
            raw = os.environ.get(env, config.get(key))
            if raw is None:
                raise GenopsError(f"the model config holds no {key} and {env} is not set: re-register the version")
            try:
                values[key] = int(raw)
            except (TypeError, ValueError):
                raise GenopsError(f"{env if env in os.environ else 'model config ' + key}={raw!r}: expected a "
                                  "positive integer") from None
            if values[key] < 1:
                raise GenopsError(f"{key}={values[key]}: expected a positive integer")
        return cls(**values)

    def check(self, requests: list[tuple[int, int]]) -> None:
        """`requests`: (n, passes per image) of each row; refuses the whole request naming the limit it exceeds."""
        images = sum(n for n, _ in requests)
        work = sum(n * passes for n, passes in requests)
        if images > self.max_images:
            raise GenopsError(f"request asks for {images} images; this endpoint serves at most {self.max_images} per "
                              f"request (serving.max_images, {LIMIT_ENV['max_images']}): split it")
        if work > self.max_work:
            raise GenopsError(f"request costs {work} network passes (n x passes per image, summed over rows); this "
                              f"endpoint allows at most {self.max_work} per request (serving.max_work, "
                              f"{LIMIT_ENV['max_work']}): ask for fewer images or steps")


def request_columns(family_name: str, conditional: bool) -> dict[str, type]:
    """The columns a request for this family may carry, with their types (n and seed are required)."""
    options = family_class(family_name).sample_options
    missing = [o for o in options if o not in SAMPLE_OPTION_TYPES]
    if missing:
        raise GenopsError(f"{family_name}.sample_options {missing} have no type in models.family.SAMPLE_OPTION_TYPES")
    return {"n": int, "seed": int, **({"label": int} if conditional else {}),
            **{o: SAMPLE_OPTION_TYPES[o] for o in options}}


def _absent(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class Generator:
    """A family rebuilt from its family.json sampling through ONNX Runtime sessions (no torch weights loaded), or
    through torch with the version's weights (`backend="torch"`, for parity checks and debugging)."""

    def __init__(self, folder: Path, threads: int | None = None, backend: str = "onnx",
                 limits: RequestLimits | None = None) -> None:
        """`limits`: what one `predict_rows` call may ask for (a served endpoint); None = unlimited (the CLI)."""
        folder = Path(folder)
        verify_recorded(folder, [FAMILY_JSON], "register the version again")
        if backend not in ("onnx", "torch"):
            raise GenopsError(f"backend must be onnx or torch, got {backend!r}")
        self.family = load_bundle(folder, "cpu", weights=backend == "torch")
        self.nets = load_nets(folder, list(self.family.sampling_nets()), threads) if backend == "onnx" else None
        if self.nets and any(net.on_cuda for net in self.nets.values()):
            # On the CUDA provider the sampler's tensors live on the GPU too: I/O binding passes them by pointer.
            self.family.to(torch.device("cuda"))
        self.limits = limits
        self.columns = request_columns(self.family.name, self.family.conditional)

    @property
    def providers(self) -> list[str]:
        return next(iter(self.nets.values())).providers if self.nets else ["torch"]

    def images(self, n: int, seed: int, label: int | None = None, **options) -> torch.Tensor:
        """n images in [0, 1] (N x C x H x W) from this seed: what `genops sample` saves."""
        family = self.family
        if n < 1:
            raise GenopsError(f"n={n}: ask for at least one image")
        labels = None
        if label is not None:
            if not family.conditional:
                raise GenopsError(f"label={label} given but {family.name} is not class-conditional")
            if not 0 <= label < family.spec.num_classes:
                raise GenopsError(f"label={label} outside 0..{family.spec.num_classes - 1}")
            labels = torch.full((n,), label, dtype=torch.long)
        if options.get("guidance") not in (None, 1.0) and not family.conditional:
            raise GenopsError(f"guidance needs a class-conditional model; {family.name} is unconditional")
        return family.sample(n, torch.Generator().manual_seed(seed), labels=labels, nets=self.nets, **options)

    def complete(self, images: torch.Tensor, mask: torch.Tensor, seed: int, **options) -> torch.Tensor:
        """Inpainting: the pixels where mask is 0 generated around the kept ones (families that can)."""
        options.pop("guidance", None)  # completions run the unconditional model
        if not isinstance(self.family, Inpaints):
            raise GenopsError(f"{self.family.name} cannot inpaint (it cannot condition on part of an image); "
                              "the pixel diffusion family can")
        return self.family.complete(images, mask, torch.Generator().manual_seed(seed), nets=self.nets, **options)

    def translate(self, images: torch.Tensor, direction: str) -> torch.Tensor:
        """Images in [0, 1] (N x C x H x W, the model's shape) mapped to the other domain (families that can)."""
        if not isinstance(self.family, Translates):
            raise GenopsError(f"{self.family.name} does not translate images (--input); cyclegan does")
        return self.family.translate(images, direction, nets=self.nets)

    def parse(self, row: dict) -> dict:
        """One request row -> keyword arguments of `images`; unknown columns and wrong types are errors."""
        unknown = sorted(k for k, v in row.items() if k not in self.columns and not _absent(v))
        if "label" in unknown:
            raise GenopsError(f"label={row['label']} given but {self.family.name} is not class-conditional")
        if unknown:
            raise GenopsError(f"request column(s) {unknown} not understood by {self.family.name} "
                              f"(its columns: {', '.join(self.columns)})")
        out = {}
        for name, kind in self.columns.items():
            value = row.get(name)
            if _absent(value):
                if name in ("n", "seed"):
                    raise GenopsError(f"request column {name!r} is required (an integer)")
                continue
            try:
                if kind is int:
                    if float(value) != int(float(value)):
                        raise ValueError
                    value = int(float(value))
                else:
                    value = kind(value)
            except (TypeError, ValueError):
                raise GenopsError(f"request column {name!r}: expected {kind.__name__}, got {value!r}") from None
            out[name] = value
        return out

    def passes(self, request: dict) -> int:
        """Network passes one image of this parsed request row costs."""
        options = {k: v for k, v in request.items() if k not in ("n", "seed", "label")}
        return int(self.family.sampling_passes(**options))

    def predict_rows(self, rows: list[dict]) -> list[np.ndarray]:
        """One uint8 array (N x H x W, or N x H x W x C) per request row; every row is checked, and the whole
        request against the limits, before any image is made."""
        requests = [self.parse(row) for row in rows]
        if self.limits is not None:
            self.limits.check([(r["n"], self.passes(r)) for r in requests])
        return [to_uint8(self.images(**r)) for r in requests]


try:  # the pyfunc wrapper exists only where mlflow is installed (it is, with genops)
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object


class GeneratorModel(PythonModel):
    """MLflow pyfunc: `predict(table)` with one request per row returns a list of uint8 image arrays.

    Logged as code (genops/serving/pyfunc_entry.py), not pickled: loading a version runs genops' own code on
    the version's files, so a fetched model can never execute a pickle."""

    def load_context(self, context) -> None:
        limits = RequestLimits.from_model_config(getattr(context, "model_config", None))
        self.generator = Generator(Path(context.artifacts[BUNDLE]), limits=limits)
        # Where the graphs run, in the server's log: CUDAExecutionProvider only where a GPU was really used.
        logging.getLogger(__name__).warning("genops generator %s: ONNX Runtime providers=%s, limits=%s",
                                            self.generator.family.name, ",".join(self.generator.providers), limits)

    # The type hint MLflow documents for a table input: it stops MLflow's "add type hints" warning, and a
    # DataFrame hint infers no schema, so the request signature logged with the version stays the one in force.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[np.ndarray]:
        if isinstance(model_input, dict):
            model_input = pd.DataFrame([model_input])
        if not isinstance(model_input, pd.DataFrame):
            raise GenopsError(f"a request is a table (one row per request), got {type(model_input).__name__}")
        try:
            return self.generator.predict_rows(model_input.to_dict(orient="records"))
        except GenopsError as exc:  # a bad request: MLflow's server answers 400 with this message, not a trace
            raise MlflowException.invalid_parameter_value(str(exc)) from None

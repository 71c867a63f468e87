"""The one interface every generative family implements.

The core is what the pipeline needs from every family: build it from its config, its networks and optimisers,
the train step the generic loop calls, `sample` (through torch modules or ONNX Runtime sessions alike) and the
graphs to export. Everything else a family can do (encode, inpaint, translate, fit hooks, its own metrics, ...)
is a capability it opts into by inheriting it (genops.models.capabilities). Adding a family means writing a
subclass with a typed config class and naming both in `genops.config.families.FAMILIES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from genops.config.families import FamilyConfig, StackedConfig, registered_name
from genops.data.spec import DataSpec
from genops.data.tensors import Batch
from genops.errors import GenopsError
from genops.models.sample_options import SAMPLE_OPTION_TYPES  # noqa: F401 - re-exported: the interface's options
from genops.models.step import StepContext

# A network as the sampler sees it: tensors in, one tensor out. A torch module or an ORT session.
Net = Callable[..., torch.Tensor]


@dataclass
class ExportSpec:
    """A graph to export: `module(*example_inputs)`; dim 0 of every input is a dynamic batch.

    `dynamic_dims` names further dynamic axes per input name, e.g. {"image": {2: "rows"}} lets an
    autoregressive sampler run the network on only the rows generated so far.
    """

    name: str
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_dims: dict[str, dict[int, str]] = field(default_factory=dict)


@dataclass
class Metric:
    name: str
    direction: str  # "min" or "max"


@dataclass
class FamilyInfo:
    """Human-facing description used by `genops families`, model cards and reports."""

    summary: str
    samples_by: str
    limits: list[str] = field(default_factory=list)
    # True when the registered graph is one step of an iterative sampler (denoiser, autoregressive net):
    # serving must run the loop outside the graph, as `Family.sample(nets=...)` does.
    loop_outside_graph: bool = False


@dataclass
class EvaluatorView:
    """The evaluation's fixed classifier as plain functions, so a family can measure its own claims in the same
    feature space as the common sample metrics (perceptual path length, content kept by a translation) without
    the models layer knowing where the evaluator comes from."""

    features: Callable[[torch.Tensor], torch.Tensor]  # images in [0, 1] -> N x F penultimate features
    classify: Callable[[torch.Tensor], torch.Tensor] | None  # images -> N x K class probabilities; None unlabeled
    # FID between two feature sets (real N x F, other M x F), computed as the common sample metrics compute it
    frechet: Callable[[torch.Tensor, torch.Tensor], float]


class Family(ABC):
    name: str  # class default; an instance takes its config's registered name (one class can serve several)
    info: ClassVar[FamilyInfo]
    primary_metric: ClassVar[Metric]
    monitor_loss: ClassVar[str] = "loss"  # the loss whose history measures training stability
    # Keyword options `sample` accepts beyond n/labels/nets: names from genops.models.sample_options.
    sample_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: FamilyConfig, spec: DataSpec, base: Family | None = None) -> None:
        """`base` is the trained model of the family this one is stacked on (genops.config FamilyEntry.base);
        families that are not stacked get None."""
        self.name = registered_name(cfg) or type(self).name
        self.cfg = cfg
        self.spec = spec
        self.conditional = cfg.conditional
        if self.conditional and not spec.labeled:
            raise GenopsError(f"{self.name}.conditional=true but the dataset has no labels (unlabeled folder?)")
        if base is not None and not isinstance(cfg, StackedConfig):
            raise GenopsError(f"{self.name} is not built on another family's model, but was given a base")

    def labels_of(self, batch: Batch) -> torch.Tensor | None:
        """The batch's labels when the family is conditional, else None."""
        return batch.y if self.conditional else None

    # --- training -------------------------------------------------------------------------
    @abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """Every module with state; checkpointed, moved to the device, exported from."""

    @abstractmethod
    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per independently updated part (a GAN has two)."""

    @abstractmethod
    def train_step(self, batch: Batch, ctx: StepContext) -> dict[str, float]:
        """One update (backward and optimiser steps included); returns scalar losses to log: 0-d tensors left on
        the device (the loop reads them at logging intervals, avoiding a host sync per step) or floats."""

    # --- sampling ---------------------------------------------------------------------------
    @abstractmethod
    def sampling_nets(self) -> dict[str, Net]:
        """The torch networks the sampler calls, by the same names as the exported graphs."""

    @abstractmethod
    def sample(
        self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
        nets: Mapping[str, Net] | None = None, **kwargs,
    ) -> torch.Tensor:
        """n images in [0, 1], N x C x H x W. `nets` may be ONNX Runtime sessions; default torch.
        Extra keyword arguments are the family's `sample_options`."""

    def sampling_passes(self, **options) -> int:
        """Network passes one image costs with these `sample` options: the unit a served request's work is capped
        in (genops.serving.generator). One for single-pass samplers (GANs, decoders)."""
        return 1

    def sampling_labels(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor | None:
        """The labels a sampler conditions on: the caller's, else labels cycling over the classes (None if
        unconditional)."""
        if labels is not None or not self.conditional:
            return labels
        return torch.arange(n) % self.spec.num_classes

    # --- export -----------------------------------------------------------------
    @abstractmethod
    def export_specs(self) -> list[ExportSpec]:
        """Graphs to export to ONNX; the first is the sampler registered as the model."""

    # --- helpers shared by all ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(iter(self.networks().values())).parameters().__next__().device

    def to(self, device: torch.device) -> Family:
        for net in self.networks().values():
            net.to(device)
        return self

    def train_mode(self, on: bool = True) -> None:
        for net in self.networks().values():
            net.train(on)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All networks' tensors under 'net.param' keys (the safetensors checkpoint)."""
        return {f"{k}.{p}": t for k, net in self.networks().items() for p, t in net.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for k, net in self.networks().items():
            prefix = f"{k}."
            net.load_state_dict({p[len(prefix):]: t for p, t in state.items() if p.startswith(prefix)})

    def num_parameters(self) -> int:
        return sum(p.numel() for net in self.networks().values() for p in net.parameters())

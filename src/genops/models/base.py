"""The one interface every generative family implements.

The pipeline only ever talks to a `Family`: it builds one from params, calls `train_step` in a
generic loop, asks it to `sample` (through torch modules or ONNX Runtime sessions alike), lists the
graphs to export, and collects the family's own metrics. Adding a family means writing a subclass
with a typed config class and naming both in `genops.config.families.FAMILIES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from genops.config.families import FamilyConfig, MonitorSettings, StackedConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
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


# Every sampling option a family may list in `sample_options`, with its type: the CLI flags, the registered
# generator's request columns and their validation all read it, so an option is declared once.
SAMPLE_OPTION_TYPES: dict[str, type] = {"steps": int, "method": str, "eta": float, "guidance": float,
                                         "truncation": float}


class Family(ABC):
    name: str  # class default; the registry sets the registered name (one class can serve several)
    info: ClassVar[FamilyInfo]
    primary_metric: ClassVar[Metric]
    monitor_loss: ClassVar[str] = "loss"  # the loss whose history measures training stability
    # Keyword options `sample` accepts beyond n/labels/nets (exposed as `genops sample --OPTION`).
    sample_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: FamilyConfig, spec: DataSpec, base: Family | None = None) -> None:
        """`base` is the trained model of the family this one is stacked on (genops.config FamilyEntry.base);
        families that are not stacked get None."""
        self.cfg = cfg
        self.spec = spec
        self.conditional = cfg.conditional
        if self.conditional and not spec.labeled:
            raise GenopsError(f"{self.name}.conditional=true but the dataset has no labels (unlabeled folder?)")
        if base is not None and not isinstance(cfg, StackedConfig):
            raise GenopsError(f"{self.name} is not built on another family's model, but was given a base")

    def check_steps(self, steps: int) -> None:
        """Refuses a step count the family cannot train with (a phased family needs steps in every phase)."""

    def flop_phases(self) -> list[tuple[float, float]]:
        """(start as a fraction of the steps, share of the steps) of each phase whose steps cost differently;
        counted separately when the budget is turned into steps (genops.training.budget)."""
        return [(0.0, 1.0)]

    def flop_cycle(self) -> int:
        """Steps after which the per-step work repeats (a GAN updates its generator every n_critic steps)."""
        return 1

    def monitor_settings(self) -> MonitorSettings | None:
        """Mode-collapse checks during training, or None (only adversarial families need them)."""
        return None

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

    def on_train_start(self, train: ImageSet, batch_size: int) -> None:
        """Fits from the data that training needs first (e.g. latent standardisation statistics)."""

    def on_train_end(self, train: ImageSet, batch_size: int) -> None:
        """Post-training fits that are part of the model (e.g. the autoencoder's latent Gaussian)."""

    def attach_data(self, role: str, train: ImageSet, test: ImageSet) -> None:
        """Receives an extra data source the family's config names (`FamilyConfig.data_sources`, e.g. CycleGAN's
        domain B) as seeded train/test splits in the main data's shape; the stages call it before training and
        before evaluation. A family that asks for no extra data refuses any."""
        raise GenopsError(f"{self.name} takes no extra data source {role!r}")

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
        Extra keyword arguments select a sampling variant (see `sample_variants`)."""

    def sampling_passes(self, **options) -> int:
        """Network passes one image costs with these `sample` options: the unit a served request's work is capped
        in (genops.serving.generator). One for single-pass samplers (GANs, decoders)."""
        return 1

    def sample_variants(self) -> dict[str, dict]:
        """Named alternative settings of `sample` (e.g. DDIM step counts) whose quality/speed trade-off
        the evaluation measures: name -> keyword arguments for `sample`."""
        return {}

    def default_labels(self, n: int) -> torch.Tensor | None:
        """Labels cycling over classes for conditional families, None otherwise."""
        if not self.conditional:
            return None
        return torch.arange(n) % self.spec.num_classes

    def sampling_labels(self, n: int, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The labels a sampler conditions on: the caller's, else the default cycle (None if unconditional)."""
        return labels if labels is not None else self.default_labels(n)

    # --- export, evaluation -----------------------------------------------------------------
    @abstractmethod
    def export_specs(self) -> list[ExportSpec]:
        """Graphs to export to ONNX; the first is the sampler registered as the model."""

    def evaluate(self, test: ImageSet, cfg: dict, generator: torch.Generator,
                 evaluator: EvaluatorView | None = None) -> dict[str, float]:
        """Family-specific metrics on the test split (reconstruction, likelihood, ...); `evaluator` gives the
        common feature space to families whose claims are measured in it (None: skip those metrics)."""
        return {}

    def interpolate(self, a: Batch, b: Batch, steps: int) -> torch.Tensor | None:
        """Images along a path in latent space from a to b: (len(a) * steps) x C x H x W."""
        return None

    def complete(self, images: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                 nets: Mapping[str, Net] | None = None, **kwargs) -> torch.Tensor | None:
        """Fill in the pixels where `mask` is 0 (1 = keep) of images in [0, 1] (N x C x H x W; mask N x 1 x H x W),
        keeping the rest: inpainting. None for families that cannot condition on part of an image."""
        return None

    def translate(self, images: torch.Tensor, direction: str,
                  nets: Mapping[str, Net] | None = None) -> torch.Tensor | None:
        """Images in [0, 1] (N x C x H x W) of one domain mapped to the other (`direction` "a2b" or "b2a"; A is the
        training data). None for families that do not translate (`genops sample --input` refuses them)."""
        return None

    def traverse(self, x: Batch, steps: int) -> torch.Tensor | None:
        """A latent traversal of the first image of x: one row per latent direction, `steps` values along it
        (rows * steps) x C x H x W; None for families without a latent space worth walking."""
        return None

    def figures(self, generator: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
        """Pictures of what the family's own claims are about (a style-mixing grid, ...): name -> (images in [0, 1],
        images per row). The evaluate stage saves each as reports/FAMILY/eval/NAME.png and logs it."""
        return {}

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

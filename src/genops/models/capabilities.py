"""What a family can do beyond the core (genops.models.family.Family): capabilities it opts into by inheriting them.

Stages and tests ask `isinstance(family, Inpaints)`, never a family's name and never a method answering None.
Capabilities are nominal (a family names them in its class statement) rather than structural protocols, so the
class statement is the one place that says what a family does, and the training fingerprint can read it from the
source: each capability lists, in `training_methods`, the methods of it that run while training; the fingerprint
follows those (and everything they reach) for every capability in a family's bases.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import torch

from genops.config.families import MonitorSettings
from genops.data.tensors import Batch, ImageSet

if TYPE_CHECKING:
    from genops.models.family import EvaluatorView, Net


class Capability(ABC):  # noqa: B024 - a marker base; each capability declares its own abstract methods
    """Base of every capability. `training_methods`: its methods that run while training (they decide the weights
    or the saved state), read by genops.training.fingerprint."""

    training_methods: ClassVar[tuple[str, ...]] = ()


# --- training ----------------------------------------------------------------------------------------


class FitsData(Capability):
    """Fits from the training data outside the gradient steps: before (latent statistics) or after (the
    autoencoder's latent Gaussian) training. Either hook may stay a no-op."""

    training_methods = ("on_train_start", "on_train_end")

    def on_train_start(self, train: ImageSet, batch_size: int) -> None:
        """Fits the training needs first (e.g. latent standardisation statistics)."""

    def on_train_end(self, train: ImageSet, batch_size: int) -> None:
        """Post-training fits that are part of the model (e.g. the autoencoder's latent Gaussian)."""


class ExtraData(Capability):
    """Trains on a data source besides `data.source` (`FamilyConfig.data_sources`, e.g. CycleGAN's domain B)."""

    training_methods = ("attach_data",)

    @abstractmethod
    def attach_data(self, role: str, train: ImageSet, test: ImageSet) -> None:
        """Seeded train/test splits of the source named `role`, in the main data's shape; the stages call it before
        training and before evaluation."""


SINGLE_PHASE: list[tuple[float, float]] = [(0.0, 1.0)]  # the whole run costs the same per step
EVERY_STEP = 1  # ... and repeats every step


class Phased(Capability):
    """Steps that differ in cost or in what they train: phases (a VQ-VAE's prior after its autoencoder), rounds
    (distillation), cycles (a GAN's generator every n_critic steps). The budget counts each phase's FLOPs."""

    training_methods = ("check_steps", "flop_phases", "flop_cycle")

    def check_steps(self, steps: int) -> None:
        """Refuses a step count the family cannot train with (a phased family needs steps in every phase)."""

    def flop_phases(self) -> list[tuple[float, float]]:
        """(start as a fraction of the steps, share of the steps) of each phase whose steps cost differently."""
        return list(SINGLE_PHASE)

    def flop_cycle(self) -> int:
        """Steps after which the per-step work repeats."""
        return EVERY_STEP


def cost_phases(family: object) -> tuple[list[tuple[float, float]], int]:
    """(phases, cycle) the FLOP budget counts for `family`: a Phased family's own, else one phase every step."""
    if isinstance(family, Phased):
        return family.flop_phases(), family.flop_cycle()
    return list(SINGLE_PHASE), EVERY_STEP


class Monitored(Capability):
    """Watched for mode collapse while training (adversarial families: their losses say little about it)."""

    @abstractmethod
    def monitor_settings(self) -> MonitorSettings | None:
        """The checks' cadence and thresholds; None when the config turns them off."""


# --- using a trained model --------------------------------------------------------------------------


class Interpolates(Capability):
    """Encodes images: paths in latent space between real images."""

    @abstractmethod
    def interpolate(self, a: Batch, b: Batch, steps: int) -> torch.Tensor:
        """Images along a path from each image of a to the one of b: (len(a) * steps) x C x H x W."""


class InterpolatesNoise(Capability):
    """No encoder, but a smooth noise space: paths between seeded noise draws."""

    @abstractmethod
    def noise_interpolation(self, n: int, steps: int, labels: torch.Tensor | None) -> torch.Tensor:
        """n seeded paths of `steps` images each, (n * steps) x C x H x W; `labels` (n) condition conditional
        families, one label per path."""


class Traverses(Capability):
    """A latent space whose single directions are worth walking."""

    @abstractmethod
    def traverse(self, x: Batch, steps: int) -> torch.Tensor:
        """One row per latent direction from the first image of x, `steps` values along it."""


class Inpaints(Capability):
    """Conditions on part of an image: fills in the masked pixels."""

    @abstractmethod
    def complete(self, images: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                 nets: Mapping[str, Net] | None = None, **options) -> torch.Tensor:
        """Images in [0, 1] (N x C x H x W) with the pixels where `mask` (N x 1 x H x W) is 0 generated, the rest
        kept."""


class Translates(Capability):
    """Maps images of one domain to the other (A is the training data, B its ExtraData)."""

    @abstractmethod
    def translate(self, images: torch.Tensor, direction: str, nets: Mapping[str, Net] | None = None) -> torch.Tensor:
        """Images in [0, 1] (N x C x H x W) of one domain mapped to the other: `direction` "a2b" or "b2a"."""


class SampleVariants(Capability):
    """Named alternative sampler settings whose quality/speed trade-off the evaluation measures."""

    @abstractmethod
    def sample_variants(self) -> dict[str, dict]:
        """name -> keyword arguments for `sample` (e.g. DDIM step counts)."""


class OwnMetrics(Capability):
    """Metrics of the family's own claims (reconstruction, likelihood, path length, ...), beside the common ones."""

    @abstractmethod
    def evaluate(self, test: ImageSet, cfg: dict, generator: torch.Generator,
                 evaluator: EvaluatorView | None = None) -> dict[str, float]:
        """On the test split; `evaluator` is the common feature space (None: skip the metrics measured in it)."""


class OwnFigures(Capability):
    """Pictures of the family's own claims (a style-mixing grid, translations)."""

    @abstractmethod
    def figures(self, generator: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
        """name -> (images in [0, 1], images per row), saved as reports/FAMILY/eval/NAME.png."""


CAPABILITIES: tuple[type[Capability], ...] = (FitsData, ExtraData, Phased, Monitored, Interpolates,
                                              InterpolatesNoise, Traverses, Inpaints, Translates, SampleVariants,
                                              OwnMetrics, OwnFigures)


def capabilities_of(family: object) -> list[str]:
    """The capability names a family (instance or class) implements, in CAPABILITIES order."""
    cls = family if isinstance(family, type) else type(family)
    return [c.__name__ for c in CAPABILITIES if issubclass(cls, c)]

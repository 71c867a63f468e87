"""The whole of params.yaml as one typed model, `Params`: shared sections plus one section per family.

Family sections come from the registry (genops.config.families.FAMILIES), so adding a family adds its
section here without editing this file. Cross-section rules (which families exist, what is stacked on
what, monitor cadence vs logging cadence) are validators of this model.
"""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import create_model, model_validator

from genops.config.families import FAMILIES, AdversarialConfig, FamilyConfig, StackedConfig, profile_sizes
from genops.config.section import Section, field
from genops.config.sections import (
    DataConfig,
    EvaluateConfig,
    EvaluatorConfig,
    ExportConfig,
    OrchestrationConfig,
    RegisterConfig,
    ScheduleConfig,
    ServingConfig,
    SweepConfig,
    TrackingConfig,
    TrainConfig,
    ValidationConfig,
    VersioningConfig,
)
from genops.errors import GenopsError

DEFAULT_FAMILIES = ["autoencoder", "vae", "gan", "wgan-gp", "stylegan", "diffusion", "pixelcnn", "vqvae"]

# `genops pipeline --smoke`: these overrides, applied in a scratch workspace, shrink every size.
SMOKE = {
    "data.limit": 600, "train.steps": 40, "train.batch_size": 32, "train.checkpoint_every": 20,
    "train.log_every": 10, "train.snapshots": [0.25, 0.5], "evaluate.curve_samples": 64,
    "evaluate.speed_samples": 64, "evaluate.iw_samples": 4, "evaluate.nll_subset": 64,
    "evaluate.grid_size": 16, "evaluate.n_samples": 200, "evaluate.n_reference": 300, "evaluate.kid_subsets": 10,
    "evaluate.kid_subset_size": 100, "evaluator.steps": 150, "evaluate.variant_samples": 32,
    "validation.min_rows": 50, "validation.min_per_class": 2, "tracking.experiment": "genops-smoke",
    "tracking.model_prefix": "genops-smoke-", "versioning.commit": False,
    **profile_sizes("smoke"),  # each family's smoke sizes, declared with its config class
}

# `genops pipeline --profile gpu`: sizes for one modern GPU (about an hour for every family on one H200-class
# card): wider networks, a training budget of 1e16 FLOPs per family, larger batches and full-size evaluation
# budgets. train.compile stays off until benchmarks/gpu_check.sh has shown torch.compile working on the card.
GPU_PROFILE = {
    "train.device": "cuda", "train.budget": 1.0e16, "train.batch_size": 128, "train.checkpoint_every": 1000,
    "train.log_every": 100, "train.channels_last": True,
    "evaluator.steps": 3000, "evaluator.width": 64, "evaluate.batch_size": 1024,
    "evaluate.n_samples": 5000, "evaluate.n_reference": 10000, "evaluate.kid_subsets": 100,
    "evaluate.kid_subset_size": 1000, "evaluate.grid_size": 100, "evaluate.variant_samples": 1000,
    "evaluate.speed_samples": 4096, "evaluate.curve_samples": 1000, "evaluate.iw_samples": 512,
    "evaluate.nll_subset": 2000,
    **profile_sizes("gpu"),  # each family's GPU sizes, declared with its config class
}


def attribute(family: str) -> str:
    """The Python attribute of a family section (`wgan-gp` -> `wgan_gp`); the YAML key stays the family name."""
    return family.replace("-", "_")


class ParamsHead(Section):
    """The sections before the family sections (field order = params.yaml order)."""

    seed: int = field(0, "seed of the data split and of every training run")
    families: list[str] = field(DEFAULT_FAMILIES, "families the pipeline trains (each has a section below)")
    stacked: dict[str, str] = field(
        {"latent-diffusion": "vae", "diffusion-distilled": "diffusion"},
        "families trained on another family's registered model: family -> base family "
        "(DVC trains them after the base is registered; the base version is recorded in their lineage tags)")
    data: DataConfig = field(DataConfig(), "where the images come from and how they are shaped")
    validation: ValidationConfig = field(ValidationConfig(), "great-expectations thresholds")
    train: TrainConfig = field(TrainConfig(), "the training loop shared by every family")

    def family(self, name: str) -> FamilyConfig:
        """The typed section of a registered family."""
        if name not in FAMILIES:
            raise GenopsError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
        return getattr(self, attribute(name))

    def all_families(self) -> list[str]:
        """`families` (trained on the data alone) then `stacked` (trained on another family's registered model)."""
        return list(self.families) + list(self.stacked)

    def evaluation(self, name: str) -> EvaluateConfig:
        """`evaluate` with the family's own `evaluate:` budget on top."""
        return self.evaluate.with_budget(self.family(name).evaluate)  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _family_lists(self) -> ParamsHead:
        problems = []
        for name in [*self.families, *self.stacked]:
            if name not in FAMILIES:
                problems.append(f"{name!r} is not a registered family ({', '.join(FAMILIES)})")
        both = sorted(set(self.families) & set(self.stacked))
        if both:
            problems.append(f"{', '.join(both)} listed under both `families` and `stacked`; a family trained on a "
                            "registered base belongs under `stacked` only")
        for name in self.families:
            base = FAMILIES[name].base if name in FAMILIES else None
            if base:
                problems.append(f"{name} is trained on the registered {base} model, so it belongs under `stacked:` as "
                                f"`{name}: {base}` (which makes DVC train it after {base} is registered)")
        for name, base in self.stacked.items():
            want = FAMILIES[name].base if name in FAMILIES else None
            if name in FAMILIES and want != base:
                problems.append(f"stacked.{name}: {base!r}, but {name} " + (f"is built on {want}" if want else
                                "is not built on another family: list it under `families`"))
        train = self.train
        for name in self.all_families():
            cfg = getattr(self, attribute(name), None)
            if isinstance(cfg, AdversarialConfig) and cfg.monitor_every and cfg.monitor_every % train.log_every:
                problems.append(f"{name}.monitor_every ({cfg.monitor_every}) must be a multiple of train.log_every "
                                f"({train.log_every})")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _build_params_model() -> type[ParamsHead]:
    family_fields: dict[str, Any] = {
        attribute(name): (entry.config, field(entry.config(), entry.config.__doc__ or f"the {name} family",
                                              alias=name))
        for name, entry in FAMILIES.items()}
    tail: dict[str, Any] = {
        "evaluator": (EvaluatorConfig, field(EvaluatorConfig(), EvaluatorConfig.__doc__ or "")),
        "evaluate": (EvaluateConfig, field(EvaluateConfig(), "sample metrics, likelihoods and speeds per family")),
        "export": (ExportConfig, field(ExportConfig(), "ONNX export and its parity gate")),
        "register": (RegisterConfig, field(RegisterConfig(), "MLflow registration and promotion")),
        "serving": (ServingConfig, field(ServingConfig(), ServingConfig.__doc__ or "")),
        "tracking": (TrackingConfig, field(TrackingConfig(), TrackingConfig.__doc__ or "")),
        "versioning": (VersioningConfig, field(VersioningConfig(), VersioningConfig.__doc__ or "")),
        "schedule": (ScheduleConfig, field(ScheduleConfig(), "scheduled retraining")),
        "smoke": (dict[str, Any], field(SMOKE, "`genops pipeline --smoke`: these overrides, applied in a scratch "
                                        "workspace, shrink every size")),
        "profiles": (dict[str, dict[str, Any]], field({"gpu": GPU_PROFILE}, "`genops pipeline --profile NAME`: "
                     "named overrides written into params.yaml before the run (like --set), e.g. sizes for a GPU")),
        "orchestration": (OrchestrationConfig, field(OrchestrationConfig(), "how the Prefect flow runs stages")),
        "sweeps": (list[SweepConfig], field([SweepConfig()], "params sweeps run by `dvc repro` / the flow (stage "
                                            "sweep@N): the beta-VAE's rate-distortion trade-off by default")),
    }
    for name, entry in FAMILIES.items():
        if entry.base and not issubclass(entry.config, StackedConfig):
            raise TypeError(f"family {name} has a base but its config does not derive from StackedConfig")
    with warnings.catch_warnings():  # `register` shadows ABCMeta.register on the class, not on instances
        warnings.filterwarnings("ignore", message='Field name "register"')
        return create_model("Params", __base__=ParamsHead, __doc__="The whole of params.yaml.",
                            **family_fields, **tail)


Params = _build_params_model()

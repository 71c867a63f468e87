"""What a training run records in MLflow before it starts: tags that trace it, the params it ran with, its budget
and the dataset it read."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from genops.config import FamilyConfig, Params
from genops.data.tensors import split_arrays
from genops.tracking.store import context_tags, flatten, git_commit
from genops.training.budget import StepBudget


def training_tags(root: Path, family_name: str, data_hash: str, fingerprint: str, device: str, processes: int,
                  lineage: dict | None, domains: dict[str, dict]) -> dict[str, str]:
    """The tags that trace a run to its commit, data, params, device and launcher (and its base model, extra data)."""
    return {"genops.family": family_name, "genops.git_commit": git_commit(root),
            "genops.data_hash": data_hash, "genops.params_hash": fingerprint,
            "genops.device": device, "genops.train.processes": str(processes),
            **context_tags(),
            **{f"genops.base.{k}": v for k, v in (lineage or {}).items()},
            **{f"genops.data.{role}.{k}": v for role, d in domains.items() for k, v in d.items()}}


def log_training_inputs(tags: dict[str, str], cfg: FamilyConfig, params: Params, budget: StepBudget,
                        prepared: Path, spec_data: dict, mapped: bool) -> None:
    """Tags, flattened params (family, train, seed, data, budget), the budget's FLOPs and the dataset input."""
    mlflow.set_tags(tags)
    mlflow.log_params(flatten({"family": cfg.model_dump(mode="json", by_alias=True),
                               "train": params.train.model_dump(mode="json"), "seed": params.seed,
                               "data": params.data.model_dump(mode="json"),
                               "budget": {"steps": budget.steps, "source": budget.source}}))
    mlflow.log_metrics({"train_flops_per_step": budget.flops_per_step, "train_flops": budget.total_flops})
    log_dataset(prepared, spec_data, mapped)


def log_dataset(prepared: Path, spec_data: dict, mapped: bool) -> None:
    """Record the training split as an MLflow dataset input (name, digest, source).

    A memory-mapped split is recorded by its metadata, with our full-content data hash as the digest: MLflow's
    numpy digest flattens (copies) the whole array, which is what mapping avoids."""
    name = f"{spec_data['source']}@{spec_data['data_hash']}"
    if mapped:
        ds = MetaDataset(resolve_dataset_source(str(prepared)), name=name, digest=spec_data["data_hash"])
    else:
        images, labels = split_arrays(prepared, "train")
        ds = mlflow.data.from_numpy(images, targets=labels, source=str(prepared), name=name)
    mlflow.log_input(ds, context="training")

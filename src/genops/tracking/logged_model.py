"""A version's MLflow LoggedModel: the pyfunc generator (logged from code, never pickled), its request signature,
and the evaluation metrics linked to it and to the dataset they were measured on (MLflow 3 model metrics)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import LoggedModelInput
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType

from genops.models.family import SAMPLE_OPTION_TYPES
from genops.serving.generator import BUNDLE, request_columns

GENERATOR_ENTRY = Path(__file__).resolve().parents[1] / "serving" / "pyfunc_entry.py"


def request_signature(family_name: str, conditional: bool):
    """Input schema: `n` and `seed` required longs; every sampling option an optional column of MLflow's Any type,
    checked by the generator itself (genops.serving.generator.Generator.parse). No output schema: one uint8 array
    per request row, shaped by the data.

    Why Any: MLflow refuses to cast a float column to long and a long column to double, and a table where some
    rows leave `steps` out holds it as floats with NaN, while JSON `{"eta": 0}` arrives as an integer, so typed
    optional columns would refuse ordinary requests. Every column any family takes is declared (MLflow silently
    drops undeclared ones), so a `label` sent to an unconditional model gets a clear refusal, not silence."""
    request_columns(family_name, conditional)  # the family's own options must all have a type
    specs = [ColSpec("long", "n"), ColSpec("long", "seed")]
    specs += [ColSpec(AnyType(), name, required=False) for name in ("label", *SAMPLE_OPTION_TYPES)]
    return ModelSignature(inputs=Schema(specs))


def log_generator(bundle: Path, family_name: str, conditional: bool, requirements: list[str],
                  code: Path, model_config: dict):
    """Log the folder `bundle` (family.json, graphs, weights, hashes.json, card) as a pyfunc generator; returns
    MLflow's ModelInfo (model_uri, model_id). `code` is the genops package the model carries (`code_paths`: MLflow
    puts it on sys.path when the model loads, so it serves where genops is not installed); `model_config` holds
    the request limits (RequestLimits). The input example (one image, seed 0) is run once by MLflow, so a version
    whose sampler cannot run is never logged."""
    return mlflow.pyfunc.log_model(
        name="model", python_model=str(GENERATOR_ENTRY), artifacts={BUNDLE: str(bundle)},
        signature=request_signature(family_name, conditional), input_example=pd.DataFrame([{"n": 1, "seed": 0}]),
        pip_requirements=requirements, code_paths=[str(code)], model_config=model_config, model_type="generator")


def evaluation_dataset(prepared: Path, spec_data: dict):
    """The held-out split the metrics were measured on, named by source and content hash (no copy of it)."""
    return MetaDataset(resolve_dataset_source(str(prepared)), name=f"{spec_data['source']}@{spec_data['data_hash']}"
                       ":test", digest=str(spec_data["data_hash"])[:16])


def link_metrics(model_id: str, metrics: dict[str, float], dataset) -> None:
    """Evaluation metrics on the LoggedModel (model_id) and its evaluation dataset, in the active run."""
    mlflow.log_input(dataset, context="evaluation", model=LoggedModelInput(model_id))
    mlflow.log_metrics(metrics, model_id=model_id, dataset=dataset)

"""The code MLflow runs to load a registered genops version (models from code: nothing is unpickled)."""

from mlflow.models import set_model

from genops.serving.generator import GeneratorModel

set_model(GeneratorModel())

"""Pure-torch model families. Nothing here knows about MLflow, Prefect, DVC or files."""

"""Orchestration: the Prefect flow over the DVC stage graph (dvc.yaml is the one description of it)."""

"""Versioning: git records of runs and the DVC commands the pipeline, its stages and the stack share."""

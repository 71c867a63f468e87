"""MLflow plumbing: where the store is, lineage tags, the registry and its promotion rule."""

"""The Family implementations: one module per family, built from its typed config."""

"""Data: reading sources, preparing a split, and in-memory tensors for training."""

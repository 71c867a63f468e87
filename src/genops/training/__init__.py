"""The one training loop every family runs through."""

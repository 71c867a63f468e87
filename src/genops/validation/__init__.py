"""Data validation: the great-expectations suite and the gate every training stage passes first."""

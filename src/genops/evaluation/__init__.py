"""Metrics and pictures computed from trained families."""

"""The per-step training history (history.csv): written by training, read by evaluation and reports."""

from __future__ import annotations

import csv
from pathlib import Path


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    keys = list(history[0]) if history else ["step"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def read_history(path: Path) -> list[dict[str, float]]:
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]

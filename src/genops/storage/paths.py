"""Where each stage reads and writes, relative to the project root (the same paths dvc.yaml names)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    root: Path

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def validation(self) -> Path:
        return self.root / "reports" / "validation"

    def checkpoint(self, family: str) -> Path:
        return self.root / "checkpoints" / family

    def work(self, family: str) -> Path:
        """In-progress checkpoints for resume; outside DVC outputs because DVC clears those."""
        return self.root / ".genops" / "work" / family

    def metrics(self, family: str) -> Path:
        return self.root / "metrics" / f"{family}.json"

    def report(self, family: str) -> Path:
        return self.root / "reports" / family

    def exported(self, family: str) -> Path:
        return self.root / "exported" / family

    @property
    def evaluator(self) -> Path:
        """The in-domain feature network (weights + evaluator.json)."""
        return self.root / "checkpoints" / "evaluator"

    @property
    def evaluator_metrics(self) -> Path:
        return self.root / "metrics" / "evaluator.json"

    def export_metrics(self, family: str) -> Path:
        return self.root / "metrics" / "export" / f"{family}.json"

    @property
    def comparison(self) -> Path:
        return self.root / "reports" / "comparison"

    def registration(self, family: str) -> Path:
        return self.root / "reports" / "registry" / f"{family}.json"

"""What a model needs to know about the data: image shape and labels."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DataSpec:
    height: int
    width: int
    channels: int
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def dims(self) -> int:
        """Number of pixel values per image, the denominator of bits/dim."""
        return self.channels * self.height * self.width

    @property
    def labeled(self) -> bool:
        return self.num_classes > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        return cls(
            height=int(d["height"]),
            width=int(d["width"]),
            channels=int(d["channels"]),
            num_classes=int(d.get("num_classes", 0)),
            class_names=list(d.get("class_names", [])),
        )

    @classmethod
    def load(cls, prepared_dir: Path) -> DataSpec:
        return cls.from_dict(json.loads((Path(prepared_dir) / "spec.json").read_text()))

"""The building block of the configuration schema: a strict pydantic model.

Every section of params.yaml is a `Section`: unknown keys are errors (`extra="forbid"`), values are
checked and converted once, at load time, and each field's description is the comment params.yaml
shows for it. Fields marked `training=False` do not change what a training run produces (sampler
settings, evaluation budgets, progress bars): checkpoint fingerprints leave them out, so editing
them never retrains.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)
    # Keys a release renamed, old -> new: a params.yaml still using one fails naming the new key.
    renamed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [k for k in data if k in cls.renamed]
            if old:
                raise ValueError("; ".join(f"{k!r} was renamed to {cls.renamed[k]!r}" for k in old))
        return data

    def training_fields(self) -> dict[str, Any]:
        """The values that change what training produces (nested sections included), for fingerprints."""
        out: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if extra.get("training") is False:
                continue
            value = getattr(self, name)
            out[info.alias or name] = value.training_fields() if isinstance(value, Section) else _plain(value)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True)
    if isinstance(value, tuple):
        return list(value)
    return value


def field(default: Any, description: str, *, training: bool = True, **kwargs: Any) -> Any:
    """A documented field; `training=False` keeps it out of checkpoint fingerprints."""
    extra = None if training else {"training": False}
    return Field(default, description=description, json_schema_extra=extra, **kwargs)

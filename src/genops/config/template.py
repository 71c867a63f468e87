"""params.yaml written from the schema: every key, its default and its description as the comment.

`genops params --template > params.yaml` regenerates the shipped file; a test checks that the shipped file
and the schema agree key by key and value by value, so a default lives in one place only.
"""

from __future__ import annotations

import textwrap
from typing import Any

import yaml
from pydantic import BaseModel

from genops.config.loading import dump
from genops.config.params import Params
from genops.config.section import Section

HEADER = """\
# genops parameters: every stage reads this file; DVC tracks the sections each stage declares.
# Generated from the schema (src/genops/config) by `genops params --template`: every key is here with its
# default and what it means. Override on the command line with --set key=value (e.g. --set train.steps=500).
"""
WIDTH = 118


def render_values(params: BaseModel) -> str:
    """The resolved configuration as plain YAML (what `genops params` prints)."""
    return yaml.safe_dump(dump(params), sort_keys=False, width=WIDTH)


def render_template(params: Section | None = None) -> str:
    params = params or Params()
    lines = [HEADER.rstrip("\n")]
    _section(params, 0, lines)
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).removesuffix("\n...\n").strip()


def _comment(text: str, indent: int) -> list[str]:
    return [f"{' ' * indent}# {line}" for line in textwrap.wrap(" ".join(text.split()), WIDTH - indent - 2)]


def _section(model: Section, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    values = dump(model)
    for name, info in type(model).model_fields.items():
        key = info.alias or name
        if key not in values:  # an unset key of a sparse override section (a family's `evaluate:`)
            continue
        value = getattr(model, name)
        desc = info.description or ""
        if isinstance(value, Section):
            if indent == 0:
                lines.append("")
            lines += _comment(desc, indent)
            sub = values[key]
            if not sub:
                lines.append(f"{pad}{key}: {{}}")
                continue
            lines.append(f"{pad}{key}:")
            _section(value, indent + 2, lines)
        elif isinstance(value, dict) and indent == 0:
            lines.append("")
            lines += _comment(desc, indent)
            lines.append(f"{pad}{key}:")
            for k, v in values[key].items():  # one level of named override sets (`profiles:`) stays in blocks
                if isinstance(v, dict) and v and all(isinstance(x, str) and "." in x for x in v):
                    lines.append(f"{pad}  {k}:")
                    lines += [f"{pad}    {k2}: {_scalar(v2)}" for k2, v2 in v.items()]
                else:
                    lines.append(f"{pad}  {k}: {_scalar(v)}")
        else:
            text = f"{pad}{key}: {_scalar(values[key])}"
            if indent == 0:
                lines.append("")
                lines += _comment(desc, indent)
                lines.append(text)
            elif len(text) + 3 + len(desc) <= WIDTH:
                lines.append(f"{text}  # {desc}")
            else:
                lines += _comment(desc, indent)
                lines.append(text)

"""Where a flow runs: the project itself (with `--set` written into params.yaml, as `dvc exp run -S` does) or
a scratch smoke workspace with tiny sizes and its own MLflow store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from genops.versioning.dvc import dvc


def persist_overrides(root: Path, overrides: list[str]) -> None:
    """Write `--set` overrides into params.yaml, keeping its comments (as `dvc exp run -S` does)."""
    if not overrides:
        return
    from ruamel.yaml import YAML

    from genops.config import load_params, parse_override

    load_params(root, overrides)  # validates keys and values before anything is written
    yaml = YAML()
    path = root / "params.yaml"
    doc = yaml.load(path.read_text())
    for key, value in map(parse_override, overrides):
        node = doc
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    tmp = path.with_suffix(".yaml.tmp")
    with tmp.open("w") as fh:
        yaml.dump(doc, fh)
    os.replace(tmp, path)


def smoke_workspace(root: Path, overrides: list[str]) -> Path:
    """A scratch DVC project under .genops/smoke with the `smoke:` sizes; the real registry is untouched."""
    import yaml

    from genops.config import apply_overrides, dump, load_params, smoke_params, validate

    params = dump(validate(apply_overrides(dump(smoke_params(load_params(root))), overrides), "--set"))
    source = str(params["data"]["source"])
    if not Path(source).is_absolute() and (root / source).exists():
        params["data"]["source"] = str((root / source).resolve())
    ws = root / ".genops" / "smoke"
    ws.mkdir(parents=True, exist_ok=True)
    for item in ("src", "dvc.yaml"):
        target = ws / item
        if target.is_dir():
            shutil.rmtree(target)
        (shutil.copytree if (root / item).is_dir() else shutil.copy)(root / item, target)
    (ws / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if not (ws / ".dvc").is_dir():
        dvc(ws, "init", "--no-scm", "--quiet")
        dvc(ws, "config", "core.analytics", "false")
    return ws

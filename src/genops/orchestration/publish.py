"""What a flow run shows besides its logs: artifacts (metrics table, registry links, sample grids) and events.

Everything is read from the workspace files the stages wrote (metrics/FAMILY.json, reports/registry/FAMILY.json,
reports/FAMILY/eval/samples.png, checkpoints/FAMILY/run.json), never recomputed, so the artifacts say exactly
what DVC recorded. The stages themselves know nothing of Prefect.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from prefect.artifacts import create_image_artifact, create_link_artifact, create_table_artifact
from prefect.events import emit_event

from genops.evaluation.comparison_table import COLUMNS
from genops.tracking.store import tracking_uri

PROMOTED_EVENT = "genops.model.promoted"
TABLE_KEY = "genops-metrics"
SAMPLES_ARTIFACT = "plots/samples.png"  # where the evaluate stage logs the grid in the family's MLflow run

log = logging.getLogger(__name__)


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")


def server_base(uri: str) -> str | None:
    """The tracking server's base URL without credentials (they must not end up in artifacts), or None for a
    local store (sqlite:///..., a folder)."""
    if not uri.startswith(("http://", "https://")):
        return None
    parts = urlsplit(uri)
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 address
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def version_url(uri: str, model: str, version: int | str) -> str:
    """The registered version in the MLflow UI (a server), else its `models:/` URI (a local store has no UI
    until `mlflow ui --backend-store-uri` serves it)."""
    base = server_base(uri)
    if base is None:
        return f"models:/{model}/{version}"
    return f"{base}/#/models/{quote(model, safe='')}/versions/{version}"


def samples_url(uri: str, root: Path, family: str) -> str | None:
    """A URL a browser can load the family's sample grid from, or None when there is no grid.

    With a server: its `get-artifact` endpoint for the grid the evaluate stage logged to the family's run
    (the route the MLflow UI itself loads images from; it serves image/png, as an attachment, which an <img>
    tag still shows). Without one: the local file (file://)."""
    png = root / "reports" / family / "eval" / "samples.png"
    if not png.is_file():
        return None
    base = server_base(uri)
    run_json = root / "checkpoints" / family / "run.json"
    if base is not None and run_json.is_file():
        run_id = json.loads(run_json.read_text()).get("run_id")
        if run_id:
            return f"{base}/get-artifact?{urlencode({'path': SAMPLES_ARTIFACT, 'run_uuid': run_id})}"
    return png.resolve().as_uri()


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _number(value: object) -> float | int | str | bool | None:
    """Table cells: numbers as numbers (NaN/inf as empty), anything else as text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return round(value, 6) if math.isfinite(value) else None
    return str(value)


def metric_rows(root: Path, families: list[str]) -> list[dict]:
    """One row per evaluated family: its primary metric, the comparison's columns, its registry decision."""
    rows = []
    for fam in families:
        m = _read(root / "metrics" / f"{fam}.json")
        if not m:
            continue
        m.update(_read(root / "metrics" / "export" / f"{fam}.json"))
        r = _read(root / "reports" / "registry" / f"{fam}.json")
        key = m.get("primary_metric")
        row = {"family": fam, "primary metric": key, "primary value": _number(m.get(key)) if key else None}
        row.update({key_: _number(m.get(key_)) for _, key_, _, _ in COLUMNS})
        row.update({"model": r.get("model"), "version": r.get("version"), "alias": r.get("alias"),
                    "decision": r.get("reason")})
        rows.append(row)
    return rows


def publish_artifacts(root: Path, families: list[str]) -> dict[str, list[str]]:
    """Create the flow run's table, link and image artifacts; returns their keys by kind."""
    uri = tracking_uri(root)
    made: dict[str, list[str]] = {"table": [], "link": [], "image": []}
    rows = metric_rows(root, families)
    if rows:
        create_table_artifact(table=rows, key=TABLE_KEY,
                              description="genops: metrics of every family side by side (as in reports/comparison), "
                                          "with each one's registered version and promotion decision")
        made["table"].append(TABLE_KEY)
    for fam in families:
        r = _read(root / "reports" / "registry" / f"{fam}.json")
        if r.get("model") and r.get("version") is not None:
            key = artifact_key(r["model"], "version")
            create_link_artifact(link=version_url(uri, r["model"], r["version"]), key=key,
                                 link_text=f"{r['model']} v{r['version']} @{r.get('alias', '?')}",
                                 description=f"{fam}: the registered version in MLflow ({r.get('reason', '')})")
            made["link"].append(key)
        url = samples_url(uri, root, fam)
        if url is not None:
            key = artifact_key("genops", fam, "samples")
            create_image_artifact(image_url=url, key=key,
                                  description=f"{fam}: sample grid of the evaluate stage"
                                              + ("" if url.startswith("http") else
                                                 f" (local file {url}; no tracking server to serve it)"))
            made["image"].append(key)
    return made


def promotion_event(registration: dict, uri: str) -> dict:
    """The `emit_event` arguments announcing that `registration` (reports/registry/FAMILY.json) became champion."""
    name, version = registration["model"], registration["version"]
    return {
        "event": PROMOTED_EVENT,
        "resource": {"prefect.resource.id": f"mlflow.registered-model.{name}", "prefect.resource.name": name,
                     "genops.family": str(registration.get("family", "")), "mlflow.model.version": str(version)},
        "related": [{"prefect.resource.id": f"mlflow.model-version.{name}.{version}",
                     "prefect.resource.role": "model-version", "prefect.resource.name": f"{name} v{version}"}],
        "payload": {"model": name, "version": version, "alias": "champion", "url": version_url(uri, name, version),
                    "metric": registration.get("primary_metric"), "value": registration.get("candidate_value"),
                    "previous_champion": registration.get("previous_champion"),
                    "previous_value": registration.get("champion_value"), "reason": registration.get("reason")},
    }


def emit_promotions(root: Path, records: list[dict]) -> list[dict]:
    """One `genops.model.promoted` event per register stage of this run that made a new champion.

    A rerun that found its version already registered (same files) promotes nothing, so says nothing."""
    uri = tracking_uri(root)
    sent = []
    for rec in records:
        if not (rec.get("status") == "ran" and rec.get("stage", "").startswith("register@") and rec.get("family")):
            continue
        reg = _read(root / "reports" / "registry" / f"{rec['family']}.json")
        if reg.get("alias") != "champion" or reg.get("already_registered") or not reg.get("model"):
            continue
        spec = promotion_event(reg, uri)
        if emit_event(**spec) is None:
            log.warning("%s v%s promoted, but Prefect events are disabled here: no %s event", reg["model"],
                        reg["version"], PROMOTED_EVENT)
            continue
        sent.append(spec)
    return sent

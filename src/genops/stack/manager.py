"""`genops stack up|down|status|env|connect`: the whole team stack on one host, no Docker needed."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

from genops.errors import GenopsError
from genops.stack.layout import SERVICES, Ports, Secrets, StackLayout, client_env
from genops.stack.services import STARTERS, status, stop
from genops.versioning.dvc import dvc

log = logging.getLogger(__name__)
DVC_REMOTE = "stack"


def up(root: Path, ports: Ports | None = None, worker: bool = True, project: Path | None = None) -> dict:
    """Start every service (idempotent: a running stack is left alone). Returns URLs and start-up time;
    secrets stay in the 0600 files."""
    layout = StackLayout(root)
    if layout.exists():
        ports, creds = layout.load()
    else:
        ports, creds = ports or Ports(), Secrets.generate()
        layout.save(ports, creds)
    write_env_file(layout, ports, creds)
    running = status(layout)
    if not any(entry["running"] for entry in running.values()):
        _check_ports_free(ports)
    t0 = time.perf_counter()
    timings = {}
    try:
        for service in SERVICES:
            if service == "worker" and not worker:
                continue
            if running[service]["running"]:
                continue
            t = time.perf_counter()
            STARTERS[service](layout, ports, creds)
            timings[service] = round(time.perf_counter() - t, 2)
            log.info("stack: %s up in %.1f s", service, timings[service])
    except Exception:
        down(root)
        raise
    if project is not None:
        connect_dvc(project, client_env(ports, creds))
    env = client_env(ports, creds)
    return {"env_file": str(layout.env_file), "mlflow": env["MLFLOW_TRACKING_URI"], "prefect": env["PREFECT_API_URL"],
            "s3": env["GENOPS_S3_ENDPOINT"], "dvc_remote": env["GENOPS_DVC_REMOTE_URL"],
            "startup_s": round(time.perf_counter() - t0, 2), "service_startup_s": timings,
            "logs": str(layout.logs)}


def _check_ports_free(ports: Ports) -> None:
    named = {"postgres": ports.postgres, "mlflow": ports.mlflow, "prefect": ports.prefect, "s3": ports.s3,
             **{f"seaweedfs-internal-{i}": p for i, p in enumerate(ports.weed)}}
    busy = []
    for name, port in named.items():
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(f"{port} ({name})")
    if busy:
        raise GenopsError(f"port(s) {', '.join(busy)} already in use on 127.0.0.1: stop what uses them, or start "
                          "a new stack with --free-ports (in a new --dir)")


def down(root: Path) -> dict:
    layout = StackLayout(root)
    stopped = [s for s in reversed(SERVICES) if stop(layout, s)]
    return {"stopped": stopped}


def stack_status(root: Path) -> dict:
    layout = StackLayout(root)
    if not layout.exists():
        raise GenopsError(f"no stack under {root}: run `genops stack up` (or `make stack-up`) first")
    return status(layout)


def write_env_file(layout: StackLayout, ports: Ports, creds: Secrets) -> Path:
    lines = ["# genops team stack: `source` this file to point genops, mlflow, prefect and dvc at it.",
             "# It holds credentials: keep it private (mode 0600)."]
    lines += [f"export {k}={v}" for k, v in client_env(ports, creds).items()]
    layout.write_private(layout.env_file, "\n".join(lines) + "\n")
    return layout.env_file


def connect_dvc(project: Path, env: dict[str, str]) -> None:
    """Make the stack's bucket the project's default DVC remote, in .dvc/config.local (per clone, not in git):
    the endpoint goes there, the credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY at run time."""
    if not (project / ".dvc").is_dir():
        raise GenopsError(f"{project} is not a DVC project (no .dvc folder)")
    for key in ("GENOPS_DVC_REMOTE_URL", "GENOPS_S3_ENDPOINT"):
        if not env.get(key):
            raise GenopsError(f"{key} is not set: source the stack's env file (.genops/stack/stack.env) first")

    dvc(project, "remote", "add", "--local", "--default", "--force", DVC_REMOTE, env["GENOPS_DVC_REMOTE_URL"])
    dvc(project, "remote", "modify", "--local", DVC_REMOTE, "endpointurl", env["GENOPS_S3_ENDPOINT"])

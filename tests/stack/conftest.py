"""One team stack (PostgreSQL, SeaweedFS S3, MLflow server, Prefect server) shared by every test in tests/stack.

Package-scoped: test_browser.py and test_team_stack.py use the same servers and the same smoke run; pytest runs
test_team_stack.py last (alphabetical), whose last test stops the stack and checks nothing is left running.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import env_for, make_project, run


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, value = line[len("export "):].split("=", 1)
            out[key] = value
    return out


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    def __init__(self, folder: Path, info: dict) -> None:
        self.folder, self.info = folder, info
        self.client_env = _env_file(folder / "stack.env")
        self.secrets = json.loads((folder / "secrets.json").read_text())
        self.ports = json.loads((folder / "stack.json").read_text())["ports"]

    def env(self, root: Path, tmp: Path) -> dict[str, str]:
        env = env_for(root, tmp)
        env.update(self.client_env)
        return env

    def s3(self):
        from genops.stack.layout import Ports, Secrets
        from genops.stack.services import s3_client

        return s3_client(Ports(**self.ports), Secrets(**self.secrets))

    def all_ports(self) -> list[int]:
        p = self.ports
        return [p["postgres"], p["mlflow"], p["prefect"], p["s3"], p.get("worker_health", 4281), *p["weed"]]


@pytest.fixture(scope="package")
def stack():
    # Not under pytest's tmp: PostgreSQL runs as the `postgres` user, which must reach its data folder.
    folder = Path(tempfile.mkdtemp(prefix="genops-stack-"))
    os.chmod(folder, 0o755)
    env = env_for(folder, folder)
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        env.pop(key, None)
    t0 = time.perf_counter()
    info = json.loads(run(["genops", "-q", "stack", "up", "--dir", str(folder / "s"), "--free-ports", "--no-worker"],
                          folder, env).stdout)
    info["measured_startup_s"] = time.perf_counter() - t0
    s = Stack(folder / "s", info)
    yield s
    run(["genops", "-q", "stack", "down", "--dir", str(folder / "s")], folder, env, check=False)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="package")
def smoke_on_stack(stack, tmp_path_factory):
    """A smoke-size run of vae + latent diffusion (stacked) logged and registered on the stack."""
    tmp = tmp_path_factory.mktemp("smoke")
    root = make_project(tmp / "proj", {"families": ["vae"], "stacked": {"latent-diffusion": "vae"}})
    env = stack.env(root, tmp)
    t0 = time.perf_counter()
    proc = run(["genops", "pipeline", "--smoke", "--shared-tracking", "--set", "train.steps=8"], root, env)
    return {"root": root, "tmp": tmp, "env": env, "wall_s": time.perf_counter() - t0,
            "output": proc.stdout + proc.stderr, "summary": json.loads(proc.stdout)}

"""The serving tests share one registered diffusion model (and its distilled student): trained once per package."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from tests.conftest import env_for, make_project, run


@pytest.fixture(scope="package")
def registered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generator")
    root = make_project(tmp / "proj", {"families": ["diffusion"], "tracking.system_metrics_interval_s": 1,
                                       "stacked": {"diffusion-distilled": "diffusion"},
                                       "diffusion-distilled.start_steps": 8, "diffusion-distilled.rounds": 2,
                                       "diffusion-distilled.evaluate.n_samples": 24,
                                       "diffusion-distilled.evaluate.variant_samples": 16,
                                       "diffusion-distilled.evaluate.speed_samples": 8})
    env = env_for(root, tmp)
    run(["dvc", "repro", "register@diffusion", "register-stacked@diffusion-distilled"], root, env)
    return root, env, tmp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_invocations(port: int, payload: dict, timeout: float = 300) -> tuple[int, dict]:
    """POST a request to MLflow's scoring server on loopback: (HTTP status, JSON body), errors included."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())

"""The team set-up for real: PostgreSQL, SeaweedFS S3, an MLflow server, a Prefect server, pool and worker.

One stack for tests/stack (`genops stack up --free-ports` in a temp folder, loopback only; tests/stack/conftest.py);
the last test here stops it and checks that nothing of it is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import env_for, make_project, run
from tests.stack.conftest import listening

pytestmark = pytest.mark.integration


def test_smoke_run_registers_on_postgres_with_artifacts_in_the_bucket(stack, smoke_on_stack):
    import psycopg2
    from mlflow import MlflowClient

    assert not smoke_on_stack["summary"]["failed"]
    client = MlflowClient(tracking_uri=stack.client_env["MLFLOW_TRACKING_URI"])
    vae = client.get_model_version_by_alias("genops-smoke-vae", "champion")
    latent = client.get_model_version_by_alias("genops-smoke-latent-diffusion", "champion")
    assert latent.tags["genops.base.model"] == "genops-smoke-vae" and latent.tags["genops.base.version"] == vae.version
    # The registry lives in PostgreSQL ...
    conn = psycopg2.connect(host="127.0.0.1", port=stack.ports["postgres"], user="genops",
                            password=stack.secrets["pg_password"], dbname="mlflow")
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM registered_models")
        names = {r[0] for r in cur.fetchall()}
    conn.close()
    assert {"genops-smoke-vae", "genops-smoke-latent-diffusion"} <= names
    # ... and every registered file is an object in the MLflow bucket, stored through the server.
    keys = [o["Key"] for page in stack.s3().get_paginator("list_objects_v2").paginate(Bucket="genops-mlflow")
            for o in page.get("Contents", [])]
    model_id = vae.model_id or vae.source.removeprefix("models:/").split("/")[0]
    model_keys = [k for k in keys if f"/models/{model_id}/" in k]
    names_in_bucket = {k.rsplit("/", 1)[-1] for k in model_keys}
    expected = {"MLmodel", "pyfunc_entry.py", "sampler.onnx", "family.json", "weights.safetensors", "MODEL_CARD.md"}
    assert expected <= names_in_bucket, (
        model_id, vae.source, [k for k in keys if "/models/" in k][:20])
    assert not (smoke_on_stack["root"] / ".genops" / "smoke" / "mlruns").exists()
    (smoke_on_stack["tmp"] / "bucket-listing.txt").write_text("\n".join(sorted(model_keys)) + "\n")
    print("stack start-up s:", round(stack.info["measured_startup_s"], 1), "smoke wall s:",
          round(smoke_on_stack["wall_s"], 1), "\n" + "\n".join(sorted(model_keys)))


def test_no_secret_reaches_logs_params_tags_or_model_cards(stack, smoke_on_stack):
    from mlflow import MlflowClient

    secrets = [v for v in stack.secrets.values()]
    client = MlflowClient(tracking_uri=stack.client_env["MLFLOW_TRACKING_URI"])
    texts = [smoke_on_stack["output"]]
    experiment = client.get_experiment_by_name("genops-smoke")
    for r in client.search_runs([experiment.experiment_id]):
        texts += [json.dumps(r.data.params), json.dumps(r.data.tags)]
    for name in ("genops-smoke-vae", "genops-smoke-latent-diffusion"):
        mv = client.get_model_version_by_alias(name, "champion")
        texts.append(json.dumps(mv.tags))
    import mlflow

    mlflow.set_tracking_uri(stack.client_env["MLFLOW_TRACKING_URI"])
    folder = Path(mlflow.artifacts.download_artifacts("models:/genops-smoke-vae@champion",
                                                      dst_path=str(smoke_on_stack["tmp"] / "card")))
    texts.append((folder / "artifacts" / "genops" / "MODEL_CARD.md").read_text())
    texts += [p.read_text(errors="replace") for p in (stack.folder / "logs").glob("*.log")]
    for secret in secrets:
        assert not any(secret in t for t in texts)


def test_a_second_clone_with_only_the_tracking_uri_samples_the_champion(stack, smoke_on_stack, tmp_path):
    other = tmp_path / "clone"
    other.mkdir()
    shutil.copy(smoke_on_stack["root"] / "params.yaml", other / "params.yaml")
    env = env_for(other, tmp_path)
    for key in [k for k in env if k.startswith(("AWS_", "MLFLOW_S3"))]:
        env.pop(key)
    env["MLFLOW_TRACKING_URI"] = stack.client_env["MLFLOW_TRACKING_URI"]
    out = tmp_path / "s.npz"
    run(["genops", "sample", "vae", "--model-uri", "models:/genops-smoke-vae@champion", "--n", "4", "--out",
         str(out)], other, env)
    assert np.load(out)["images"].shape == (4, 28, 28)
    assert not (other / "mlruns").exists() and not (other / "mlflow.db").exists()


def test_deployed_retraining_runs_on_a_worker_pushes_to_the_remote_and_restores_in_a_clone(stack, tmp_path):
    from mlflow import MlflowClient

    root = make_project(tmp_path / "proj", {"families": ["autoencoder"], "stacked": {}})
    env = stack.env(root, tmp_path)
    run(["genops", "stack", "connect"], root, env)  # the bucket becomes this clone's DVC remote
    flow_run_id, worker = _deployment_run_on_a_worker(root, env)
    try:
        state = _wait_for_flow_run(flow_run_id, env, root, timeout=600)
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)
    assert state == "COMPLETED", state
    client = MlflowClient(tracking_uri=stack.client_env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("genops").experiment_id],
                              filter_string=f"tags.`genops.prefect.flow_run_id` = '{flow_run_id}'")
    assert {r.data.tags["mlflow.runName"] for r in runs} >= {"autoencoder", "comparison"}

    # The deployment records its run in git (dvc.lock committed) and pushed the outputs to the remote: a fresh
    # clone pulls the same bytes and DVC has nothing to do.
    head = run(["git", "rev-parse", "HEAD"], root, env).stdout.strip()
    assert "dvc.lock" in run(["git", "show", "--name-only", "--format=", "HEAD"], root, env).stdout
    champion = client.get_model_version_by_alias("genops-autoencoder", "champion")
    assert champion.tags["genops.lineage.commit"] == head
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    run(["genops", "stack", "connect"], clone, env)
    run(["dvc", "pull"], clone, env)
    for rel in ("checkpoints/autoencoder/weights.safetensors", "data/prepared/train.npz",
                "exported/autoencoder/sampler.onnx"):
        assert (clone / rel).read_bytes() == (root / rel).read_bytes(), rel
    assert "up to date" in run(["dvc", "status"], clone, env).stdout


def test_a_run_whose_worker_and_host_process_died_is_marked_crashed_not_left_running(stack, tmp_path):
    """The stack's automation (stack/zombies.py) expects a heartbeat or a final state; a run whose every process
    is SIGKILLed (worker, the flow run it started: a lost host) must turn CRASHED within a few beats."""
    from genops.stack import zombies

    root = make_project(tmp_path / "proj", {"families": ["autoencoder"], "stacked": {}})
    env = {**stack.env(root, tmp_path), "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(zombies.HEARTBEAT_S)}
    flow_run_id, worker = _deployment_run_on_a_worker(root, env)
    try:
        assert _wait_for_flow_run(flow_run_id, env, root, timeout=300, states=("RUNNING",)) == "RUNNING"
        time.sleep(5)  # the run's first heartbeat is sent as it starts
    finally:
        killed = _kill_tree(worker.pid)
        worker.wait(30)
    assert len(killed) >= 2, killed  # the worker and the flow run's own process
    t0 = time.monotonic()
    state = _wait_for_flow_run(flow_run_id, env, root, timeout=zombies.MISSED_BEATS * zombies.HEARTBEAT_S + 150)
    assert state == "CRASHED", f"{state} after {time.monotonic() - t0:.0f} s"


def _deployment_run_on_a_worker(root: Path, env: dict) -> tuple[str, subprocess.Popen]:
    """The project's deployments created, a run of the scheduled retraining, and a process worker to run it."""
    run(["prefect", "--no-prompt", "deploy", "--all"], root, env)
    out = run(["prefect", "deployment", "run", "genops-retrain/scheduled"], root, env).stdout
    flow_run_id = next(w for w in out.split() if w.count("-") == 4 and len(w) == 36)
    worker = subprocess.Popen(["prefect", "worker", "start", "--pool", "genops", "--type", "process"], cwd=root,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return flow_run_id, worker


def _kill_tree(root_pid: int) -> list[int]:
    """SIGKILL a process and every descendant (what a host crash leaves: nothing of it gets to clean up). By
    parent links, not session: Prefect's process worker starts each flow run in a session of its own."""
    import psutil

    root = psutil.Process(root_pid)
    killed = []
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
            killed.append(proc.pid)
    return killed


def _wait_for_flow_run(flow_run_id: str, env: dict, cwd: Path, timeout: float,
                       states: tuple[str, ...] = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")) -> str:
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        out = run(["prefect", "flow-run", "inspect", flow_run_id], cwd, env).stdout
        for word in states:
            if f"type=StateType.{word}" in out or f"'type': '{word}'" in out or f"StateType.{word}" in out:
                return word
        time.sleep(3)
    return state


def test_a_crashed_mlflow_server_is_restarted_by_stack_up_with_its_data_and_nothing_else_touched(stack,
                                                                                                 smoke_on_stack):
    from mlflow import MlflowClient

    env = env_for(stack.folder, stack.folder)
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        env.pop(key, None)
    before = json.loads(run(["genops", "-q", "stack", "status", "--dir", str(stack.folder)], stack.folder,
                            env).stdout)
    assert before["mlflow"]["running"] and before["prefect"]["running"]
    os.killpg(before["mlflow"]["pid"], 9)  # a crash: no clean shutdown
    deadline = time.time() + 20
    while listening(stack.ports["mlflow"]) and time.time() < deadline:
        time.sleep(0.5)
    crashed = json.loads(run(["genops", "-q", "stack", "status", "--dir", str(stack.folder)], stack.folder,
                             env).stdout)
    assert not crashed["mlflow"]["running"] and crashed["prefect"]["pid"] == before["prefect"]["pid"]
    # up again, this time with the stack's own worker (readiness from its --with-healthcheck endpoint)
    info = json.loads(run(["genops", "-q", "stack", "up", "--dir", str(stack.folder)], stack.folder, env).stdout)
    assert set(info["service_startup_s"]) == {"mlflow", "worker"}, info  # only what was down was started
    after = json.loads(run(["genops", "-q", "stack", "status", "--dir", str(stack.folder)], stack.folder,
                           env).stdout)
    assert after["mlflow"]["running"] and after["mlflow"].get("healthy")
    assert after["worker"]["running"] and after["worker"].get("healthy")
    assert after["prefect"]["pid"] == before["prefect"]["pid"] and after["postgres"]["pid"] == before["postgres"]["pid"]
    client = MlflowClient(tracking_uri=stack.client_env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version_by_alias("genops-smoke-vae", "champion")  # the registry survived the crash


def test_stack_down_leaves_nothing_running(stack):
    env = env_for(stack.folder, stack.folder)
    stopped = json.loads(run(["genops", "-q", "stack", "down", "--dir", str(stack.folder)], stack.folder,
                             env).stdout)["stopped"]
    assert {"postgres", "seaweedfs", "mlflow", "prefect"} <= set(stopped)
    busy = [p for p in stack.all_ports() if listening(p)]
    assert not busy, f"still listening after down: {busy}"
    left = subprocess.run(["pgrep", "-f", str(stack.folder)], capture_output=True, text=True).stdout.split()
    assert not left, left

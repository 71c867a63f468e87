"""A registered version serves where genops is not installed, through the MLflow paths users know.

MLflow builds the version's environment itself (`mlflow models serve --env-manager virtualenv`: pyenv's Python,
pip, the version's requirements.txt from the public index). Everything after that runs inside that environment,
which holds only the version's own requirements, from a fresh directory, with nothing but MLFLOW_TRACKING_URI
pointing at a real `mlflow server`: REST (same bytes as `genops sample`, limits answered with 400, concurrent
clients), `mlflow models predict` (file in, file out), batch inference with `mlflow.pyfunc.load_model`, and
`mlflow models generate-dockerfile` (no Docker engine here: the Dockerfile is checked, no image is built).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BIN, run
from tests.serving.conftest import free_port, post_invocations

MODEL_URI = "models:/genops-diffusion@champion"


def _wait(port: int, proc: subprocess.Popen, path: str, seconds: float, log: Path) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2)
            return
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()[-4000:]}") from None
            time.sleep(1)
    raise AssertionError(f"no answer on :{port}{path} after {seconds} s:\n{log.read_text()[-4000:]}")


def _start(cmd: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def _pyenv() -> str:
    found = shutil.which("pyenv") or str(Path.home() / ".pyenv" / "bin" / "pyenv")
    assert Path(found).is_file(), "MLflow's virtualenv env manager needs pyenv (https://github.com/pyenv/pyenv)"
    return found


@pytest.fixture(scope="module")
def anywhere(registered):
    """A tracking server on the test's store; the version's environment built by MLflow; a server in it."""
    root, env, tmp = registered
    fresh = tmp / "elsewhere"  # a directory that is not the project
    fresh.mkdir(exist_ok=True)
    tracking_port, serve_port = free_port(), free_port()
    server = _start([str(BIN / "mlflow"), "server", "--backend-store-uri", env["MLFLOW_TRACKING_URI"],
                     "--host", "127.0.0.1", "--port", str(tracking_port), "--workers", "1"], fresh, env,
                    tmp / "tracking.log")
    procs = [server]
    try:
        _wait(tracking_port, server, "/health", 120, tmp / "tracking.log")
        envs = tmp / "mlflow-envs"
        # Bootstrap: the first `mlflow models serve` (any MLflow CLI) builds the environment from the version.
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "MLFLOW_"))}
        base.update({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{tracking_port}", "MLFLOW_ENV_ROOT": str(envs),
                     "PATH": f"{Path(_pyenv()).parent}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin"})
        t0 = time.perf_counter()
        boot = _start([str(BIN / "mlflow"), "models", "serve", "-m", MODEL_URI, "--env-manager", "virtualenv",
                       "-h", "127.0.0.1", "-p", str(serve_port)], fresh, {**base, "GENOPS_SERVE_MAX_WORK": "5000"},
                      tmp / "serve.log")
        procs.append(boot)
        _wait(serve_port, boot, "/ping", 900, tmp / "serve.log")
        built = [p for p in envs.iterdir() if p.name.startswith("mlflow-")]
        assert len(built) == 1, built
        venv = built[0]
        inside = {**base, "PATH": f"{venv / 'bin'}{os.pathsep}{base['PATH']}"}
        yield {"root": root, "env": env, "tmp": tmp, "fresh": fresh, "venv": venv, "inside": inside,
               "port": serve_port, "build_s": time.perf_counter() - t0}
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _sample(registered, name: str, *args: str) -> np.ndarray:
    root, env, tmp = registered
    run(["genops", "sample", "diffusion", *args, "--out", str(tmp / f"{name}.npz")], root, env)
    with np.load(tmp / f"{name}.npz") as npz:
        return npz["images"]


def test_a_version_carries_its_code_and_requirements_from_the_public_index(registered, anywhere):
    venv = anywhere["venv"]
    python = venv / "bin" / "python"
    # genops is not installed in the environment MLflow built: only the version's own copy (code/) can be imported
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('genops'))"],
                           capture_output=True, text=True, env=anywhere["inside"], cwd=anywhere["fresh"])
    assert probe.stdout.strip() == "None", probe
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            env=anywhere["inside"], check=True).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert {"mlflow-skinny", "onnxruntime", "torch"} <= installed
    assert not {"genops", "mlflow", "onnxruntime-gpu", "dvc", "prefect", "great-expectations"} & installed

    code = ("import mlflow, json; from mlflow.pyfunc import get_model_dependencies as d; "
            f"p = mlflow.artifacts.download_artifacts({MODEL_URI!r}); "
            "print(json.dumps([open(d(p)).read(), open(p + '/MLmodel').read()]))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=anywhere["inside"],
                         cwd=anywhere["fresh"], check=True).stdout.strip().splitlines()[-1]
    requirements, mlmodel = json.loads(out)
    lines = [r for r in requirements.splitlines() if r.strip()]
    assert all("+" not in r for r in lines), lines  # no local version suffix such as +cpu
    assert lines[0].startswith("mlflow-skinny==")
    assert any(r.startswith("onnxruntime==") for r in lines) and any(r.startswith("torch==") for r in lines)
    assert "code: code" in mlmodel and "max_work:" in mlmodel


def test_rest_from_the_built_environment_answers_what_genops_sample_makes(registered, anywhere):
    port = anywhere["port"]
    plain = _sample(registered, "plain", "--n", "3", "--seed", "5")
    fast = _sample(registered, "fast", "--n", "2", "--seed", "1", "--steps", "2", "--eta", "0")
    status, body = post_invocations(port, {"dataframe_records": [{"n": 3, "seed": 5}, {"n": 2, "seed": 1, "steps": 2,
                                                                            "eta": 0}]})
    assert status == 200, body
    assert np.array_equal(np.array(body["predictions"][0], np.uint8), plain)
    assert np.array_equal(np.array(body["predictions"][1], np.uint8), fast)
    # The request budget: images and network passes, summed over the request's rows, refused before any work.
    # The server runs with GENOPS_SERVE_MAX_WORK=5000 (the fixture), overriding the registered 65,536.
    status, body = post_invocations(port, {"dataframe_records": [{"n": 1000, "seed": 0}, {"n": 100, "seed": 1}]})
    assert status == 400 and "1100 images" in body["message"] and "serving.max_images" in body["message"]
    status, body = post_invocations(port, {"dataframe_records": [{"n": 200, "seed": 0, "steps": 20},
                                                      {"n": 60, "seed": 1, "steps": 20}]})
    assert status == 400 and "costs 5200 network passes" in body["message"], body
    assert "at most 5000" in body["message"] and "GENOPS_SERVE_MAX_WORK" in body["message"]
    status, body = post_invocations(port, {"dataframe_records": [{"n": 200, "seed": 0, "steps": 20}]})
    assert status == 200 and len(body["predictions"][0]) == 200  # 4,000 passes: within the limit


def test_concurrent_clients_each_get_their_own_seeds_images(registered, anywhere):
    port = anywhere["port"]
    requests = [{"dataframe_records": [{"n": 4, "seed": s}]} for s in range(8)]
    alone = [post_invocations(port, r) for r in requests]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda r: post_invocations(port, r), requests))
    assert all(s == 200 for s, _ in alone + together)
    for (_, a), (_, b) in zip(alone, together):
        assert a["predictions"] == b["predictions"]
    assert alone[0][1]["predictions"] != alone[1][1]["predictions"]


def test_mlflow_models_predict_and_batch_load_model_inside_the_version_environment(registered, anywhere):
    fresh, inside, venv = anywhere["fresh"], anywhere["inside"], anywhere["venv"]
    plain = _sample(registered, "plain", "--n", "3", "--seed", "5")
    (fresh / "request.json").write_text(json.dumps({"dataframe_records": [{"n": 3, "seed": 5}]}))
    proc = subprocess.run([str(venv / "bin" / "mlflow"), "models", "predict", "-m", MODEL_URI, "-i", "request.json",
                           "-o", "answer.json", "-t", "json", "--env-manager", "local"], cwd=fresh, env=inside,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads((fresh / "answer.json").read_text())
    assert np.array_equal(np.array(answer["predictions"][0], np.uint8), plain)

    batch = ("import sys, numpy as np, pandas as pd, mlflow\n"
             f"m = mlflow.pyfunc.load_model({MODEL_URI!r})\n"
             "out = m.predict(pd.DataFrame([{'n': 3, 'seed': 5}, {'n': 2, 'seed': 7}]))\n"
             "np.savez(sys.argv[1], a=out[0], b=out[1])\n"
             "print(sys.modules['genops'].__file__)\n")
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", batch, str(fresh / "batch.npz")], cwd=fresh,
                          env=inside, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "/code/genops/__init__.py" in proc.stdout  # the version's own copy of the code
    with np.load(fresh / "batch.npz") as npz:
        assert np.array_equal(npz["a"], plain)
        assert npz["b"].shape == (2, 28, 28)


def test_generate_dockerfile_for_the_champion(registered, anywhere):
    fresh, inside, venv = anywhere["fresh"], anywhere["inside"], anywhere["venv"]
    out = fresh / "image"
    proc = subprocess.run([str(venv / "bin" / "mlflow"), "models", "generate-dockerfile", "-m", MODEL_URI, "-d",
                           str(out)], cwd=fresh, env=inside, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dockerfile = (out / "Dockerfile").read_text()
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"FROM python:{python}" in dockerfile  # the Python the version was logged with
    assert "_install_pyfunc_deps('/opt/ml/model'" in dockerfile  # the version's requirements.txt
    assert 'ENTRYPOINT ["python", "-c", "from mlflow.models import container as C; C._serve(' in dockerfile
    copied = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY model_dir")]
    assert len(copied) == 1 and f"COPY {copied[0]} /opt/ml/model" in dockerfile  # the version, as the model
    model_dir = out / copied[0]
    assert (model_dir / "code" / "genops" / "serving" / "generator.py").is_file()
    requirements = (model_dir / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements and "+cpu" not in requirements

"""A registered version is a runnable generator: mlflow.pyfunc and `mlflow models serve` return the images
`genops sample` makes for the same request and seed; metrics live on the LoggedModel; the card is the description.

One tiny diffusion family is trained, evaluated, exported and registered with the real `dvc repro`, MLflow
(SQLite) and ONNX Runtime, and its progressive-distillation student trained on the registered version (a stacked
family); the REST test starts MLflow's own scoring server on loopback.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.conftest import run
from tests.serving.conftest import free_port, post_invocations

MODEL = "genops-diffusion"


def _client(env):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])


def _predict(env, uri, rows):
    """mlflow.pyfunc in a fresh interpreter (as a user would), returning the arrays as lists."""
    code = ("import json, sys, pandas as pd, mlflow\n"
            f"m = mlflow.pyfunc.load_model({uri!r})\n"
            "out = m.predict(pd.DataFrame(json.loads(sys.argv[1])))\n"
            "print(json.dumps([o.tolist() for o in out]))")
    from tests.conftest import BIN

    proc = subprocess.run([str(BIN / "python"), "-c", code, json.dumps(rows)], env=env, capture_output=True,
                          text=True, check=True)
    return [np.array(o, dtype=np.uint8) for o in json.loads(proc.stdout.strip().splitlines()[-1])]


def _sample(root, env, tmp, name, *args):
    proc = run(["genops", "sample", "diffusion", *args, "--out", str(tmp / f"{name}.npz")], root, env)
    assert "Add type hints" not in proc.stderr  # MLflow's warning: the user's terminal shows only what genops says
    with np.load(tmp / f"{name}.npz") as npz:
        return npz["images"]


def test_pyfunc_and_rest_return_the_images_genops_sample_makes(registered):
    root, env, tmp = registered
    plain = _sample(root, env, tmp, "plain", "--n", "3", "--seed", "5")
    fast = _sample(root, env, tmp, "fast", "--n", "2", "--seed", "1", "--steps", "2", "--eta", "0")
    assert plain.dtype == np.uint8 and plain.shape == (3, 28, 28)

    rows = [{"n": 3, "seed": 5}, {"n": 2, "seed": 1, "steps": 2, "method": "ddim", "eta": 0.0}]
    got = _predict(env, f"models:/{MODEL}@champion", rows)
    assert np.array_equal(got[0], plain) and np.array_equal(got[1], fast)
    assert not np.array_equal(got[0][:2], got[1])  # the options change the answer: they were not ignored

    port = free_port()
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion", "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port)], cwd=root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "mlflow models serve exited"
                time.sleep(1)
        # JSON as a client writes it: an integer eta, a row without options beside one with them.
        status, body = post_invocations(port, {"dataframe_records": [{"n": 3, "seed": 5},
                                                          {"n": 2, "seed": 1, "steps": 2, "eta": 0}]}, timeout=120)
        assert status == 200, body
        answer = [np.array(p, dtype=np.uint8) for p in body["predictions"]]
        assert np.array_equal(answer[0], plain) and np.array_equal(answer[1], fast)
        # Bad requests: 400 with a message naming the column and what was expected.
        status, body = post_invocations(port, {"dataframe_records": [{"n": 2, "seed": 1, "label": 3}]}, timeout=120)
        assert status == 400 and "label=3 given but diffusion is not class-conditional" in body["message"]
        status, body = post_invocations(port, {"dataframe_records": [{"n": 2, "seed": 1, "steps": 2.5}]}, timeout=120)
        assert status == 400 and "request column 'steps': expected int" in body["message"]
        status, body = post_invocations(port, {"dataframe_records": [{"n": 0, "seed": 1}]}, timeout=120)
        assert status == 400 and "n=0" in body["message"]
    finally:
        import os
        import signal

        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_metrics_are_linked_to_the_logged_model_and_promotion_reads_them(registered):
    from genops.tracking.model_registry import version_model_id

    root, env, tmp = registered
    client = _client(env)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    logged = client.get_logged_model(version_model_id(champion))
    fid = [m for m in logged.metrics if m.key == "fid" and m.dataset_name]
    stored = json.loads((root / "metrics" / "diffusion.json").read_text())
    assert fid and fid[0].value == pytest.approx(stored["fid"]) and fid[0].dataset_name.endswith(":test")
    assert logged.model_type == "generator" and logged.source_run_id == champion.run_id

    # The version tag is only for the UI: promotion reads the LoggedModel. Corrupt the tag; a slightly worse
    # candidate must still be compared with the LoggedModel's value.
    client.set_model_version_tag(MODEL, champion.version, "metric.fid", "-1000")
    worse = {**stored, "fid": stored["fid"] * 1.5 + 1.0}
    (root / "metrics" / "diffusion.json").write_text(json.dumps(worse))
    result = json.loads(run(["genops", "register", "diffusion"], root, env).stdout)
    assert result["alias"] == "challenger" and result["champion_value"] == pytest.approx(stored["fid"])
    (root / "metrics" / "diffusion.json").write_text(json.dumps(stored))


def test_model_cards_are_the_descriptions_and_training_logged_system_metrics(registered):
    root, env, tmp = registered
    client = _client(env)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    card = champion.description
    for part in ("## Data", "## Lineage", "## Metrics", "real data (floor)", "## Promotion", "MODEL_CARD.md",
                 "@champion", "mlflow models serve", champion.tags["genops.git_commit"]):
        assert part in card, part
    described = client.get_registered_model(MODEL).description
    assert f"currently version {champion.version}" in described and "## Metrics" in described
    assert len(card) <= 5000 and len(described) <= 5000  # MLflow's description column (VARCHAR(5000))
    metrics = client.get_run(champion.run_id).data.metrics
    assert metrics.get("system/cpu_utilization_percentage") is not None
    assert metrics.get("system/system_memory_usage_megabytes", 0) > 0


def test_genops_sample_inpaints_an_image_file_keeping_its_top_half(registered):
    from PIL import Image

    root, env, tmp = registered
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[4:24, 12:16] = 255  # a "1"
    Image.fromarray(digit).save(tmp / "one.png")
    completed = _sample(root, env, tmp, "inpainted", "--inpaint", str(tmp / "one.png"), "--n", "2", "--seed", "3")
    assert completed.shape == (2, 28, 28)
    assert np.array_equal(completed[:, :14], np.broadcast_to(digit[:14], (2, 14, 28)))  # kept exactly
    assert not np.array_equal(completed[0, 14:], completed[1, 14:])  # two completions, two draws
    bad = run(["genops", "sample", "diffusion", "--inpaint", str(tmp / "missing.png"), "--out",
               str(tmp / "x.npz")], root, env, check=False)
    assert bad.returncode != 0 and "missing.png: not a readable image for --inpaint" in bad.stderr
    metrics = json.loads((root / "metrics" / "diffusion.json").read_text())
    assert 0 <= metrics["inpaint_accuracy"] <= 1 and metrics["inpaint_fid"] > 0 and metrics["inpaint_images"] == 16
    assert metrics["inpaint_kept_mse"] < 1e-10
    assert (root / "reports" / "diffusion" / "eval" / "inpainting.png").is_file()


def test_the_distilled_student_learns_from_the_registered_teacher_and_is_its_own_version(registered):
    root, env, tmp = registered
    client = _client(env)
    student = client.get_model_version_by_alias("genops-diffusion-distilled", "champion")
    teacher = client.get_model_version(MODEL, student.tags["genops.base.version"])
    assert student.tags["genops.base.model"] == MODEL and teacher.run_id == student.tags["genops.base.run_id"]
    metrics = json.loads((root / "metrics" / "diffusion-distilled.json").read_text())
    # FID against steps for each round's student and, on the same grid, the registered teacher
    assert {"ddim4_fid", "teacher_ddim4_fid", "ddim2_fid", "teacher_ddim2_fid", "teacher_ddim8_fid"} <= set(metrics)
    assert metrics["student_steps"] == 2 and metrics["train_steps"] >= 2
    family = json.loads((root / "checkpoints" / "diffusion-distilled" / "family.json").read_text())
    assert family["cfg"]["widths"] == family["base_cfg"]["widths"] == [8, 16]  # the teacher's network
    images = _predict(env, "models:/genops-diffusion-distilled@champion", [{"n": 3, "seed": 0}])[0]
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8

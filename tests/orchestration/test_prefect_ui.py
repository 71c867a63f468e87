"""What the Prefect UI shows for a run, read back through the Prefect client from a real (test-harness) server.

One real `genops_pipeline` flow run over a small DVC project: a real `genops prepare` in process (the `genops`
loggers), and stand-in evaluate/register stages (tests/orchestration/fake_stage.py, run as subprocesses) that
print like the real ones and write the files the real ones write (metrics, sample grid, registry decision), so
the flow's logging, artifacts and promotion events run their real code in seconds instead of a training run.
Then the data watcher and the retraining deployment's trigger, down to the flow run the automation creates.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.conftest import BIN, PROJECT, write_params

HERE = Path(__file__).parent
SECRET = "s3cr3t-t0ken-value"
DVC_YAML = """\
stages:
  prepare:
    cmd: genops prepare
    params:
      - data
    outs:
      - data/prepared
  evaluate:
    foreach: ${families}
    do:
      cmd: python fake_stage.py evaluate ${item}
      deps:
        - data/prepared
        - fake_stage.py
      outs:
        - reports/${item}/eval
        - checkpoints/${item}
      metrics:
        - metrics/${item}.json
  register:
    foreach: ${families}
    do:
      cmd: python fake_stage.py register ${item}
      deps:
        - metrics/${item}.json
      outs:
        - reports/registry/${item}.json
"""


def _wait_for(read, ok, timeout: float = 45.0, what: str = ""):
    """Logs and events reach the server in batches (and events are persisted a few seconds later): poll."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value) or time.monotonic() > deadline:
            assert ok(value), f"timed out waiting for {what}: {value!r}"[:4000]
            return value
        time.sleep(1.0)


@pytest.fixture(scope="module")
def prefect_client(tmp_path_factory):
    """A temporary Prefect server (the test harness: SQLite, the event and automation services running)."""
    from prefect import get_client
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings({PREFECT_HOME: home, PREFECT_SERVER_ANALYTICS_ENABLED: False}), \
            prefect_test_harness(server_startup_timeout=120), get_client(sync_client=True) as client:
        yield client


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, prefect_client):
    """One real flow run of genops_pipeline over a small DVC project (one family); returns what it left."""
    from genops.orchestration.flow import genops_pipeline

    root = tmp_path_factory.mktemp("ws")
    shutil.copy(PROJECT / "params.yaml", root / "params.yaml")
    write_params(root, {"families": ["vae"], "stacked": {}, "data.source": "digits", "data.limit": 200,
                        "versioning.commit": False})
    (root / "dvc.yaml").write_text(DVC_YAML)
    shutil.copy(HERE / "fake_stage.py", root / "fake_stage.py")
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=root, check=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("GENOPS_TEST_API_TOKEN", SECRET)  # a secret by its name: masked in forwarded lines
        mp.setenv("DVC_NO_ANALYTICS", "1")
        t0 = time.perf_counter()
        state = genops_pipeline(str(root), record=False, return_state=True)
        wall = time.perf_counter() - t0
    summary = state.result()
    assert not summary["failed"], summary
    return {"root": root, "flow_run_id": state.state_details.flow_run_id, "summary": summary, "wall": wall}


@pytest.mark.integration
def test_stage_output_and_genops_records_are_in_the_flow_runs_logs(prefect_client, pipeline_run):
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    ran = {r["stage"] for r in pipeline_run["summary"]["stages"] if r["status"] == "ran"}
    assert ran == {"prepare", "evaluate@vae", "register@vae"}

    def read():
        return prefect_client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[pipeline_run["flow_run_id"]])))

    def has_all(logs) -> bool:
        text = "\n".join(x.message for x in logs)
        return all(s in text for s in ("fake evaluate vae: scored", "images from digits", "sampling 100%"))

    logs = _wait_for(read, has_all, what="stage lines and genops records in the run's logs")
    text = "\n".join(x.message for x in logs)
    # A line printed by the stage's subprocess, sent by the task run of that stage.
    line = next(x for x in logs if "fake evaluate vae: scored 48 samples" in x.message)
    assert line.task_run_id is not None and line.level == 20 and line.name == "genops.stage_output"
    assert sum("fake evaluate vae: scored" in x.message for x in logs) == 1  # sent once
    # Progress-bar redraws collapse to the final state of the line; only complete lines are sent.
    assert "sampling 100%" in text and "sampling  50%" not in text
    # The stage's own log format carries its level through.
    warning = next(x for x in logs if "recall is low" in x.message)
    assert warning.level == 30
    # A record of a `genops` logger, from the stage that ran in the flow's process (prepare).
    record = next(x for x in logs if x.name == "genops.stages.prepare" and "images from digits" in x.message)
    assert record.task_run_id is not None and record.level == 20
    assert sum("images from digits" in x.message for x in logs) == 1  # one handler, however deeply nested
    # Secrets in output are masked: a secret-named variable's value, a URL's password.
    assert SECRET not in text and "hunter22" not in text
    assert "http://bob:***@tracking.example:5000" in text


@pytest.mark.integration
def test_artifacts_table_links_and_sample_grid(prefect_client, pipeline_run):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = prefect_client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[pipeline_run["flow_run_id"]])))
    by_key = {a.key: a for a in artifacts}
    assert {"genops-pipeline", "genops-metrics", "genops-vae-version", "genops-vae-samples"} <= set(by_key)

    table = by_key["genops-metrics"]
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    (row,) = rows
    metrics = json.loads((pipeline_run["root"] / "metrics" / "vae.json").read_text())
    assert row["family"] == "vae" and row["primary metric"] == "fid" and row["primary value"] == metrics["fid"]
    assert row["fid"] == metrics["fid"] and row["recall"] == metrics["recall"] and row["kid_mean"] is None
    assert row["model"] == "genops-vae" and row["version"] == 3 and row["alias"] == "champion"

    link = by_key["genops-vae-version"]  # a link artifact is stored as a markdown link
    assert link.type == "markdown"
    assert link.data == "[genops-vae v3 @champion](models:/genops-vae/3)"  # a local store: the version's URI

    image = by_key["genops-vae-samples"]
    png = pipeline_run["root"] / "reports" / "vae" / "eval" / "samples.png"
    assert image.type == "image" and image.data == png.resolve().as_uri()


@pytest.mark.integration
def test_with_a_tracking_server_the_artifacts_link_its_ui_and_serve_the_grid_from_it(prefect_client, tmp_path,
                                                                                      monkeypatch):
    from prefect import flow
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.runtime import flow_run

    from genops.orchestration.publish import publish_artifacts, samples_url, server_base, version_url

    uri = "http://bob:hunter22@127.0.0.1:5000/"
    assert server_base(uri) == "http://127.0.0.1:5000"  # credentials never reach an artifact
    assert version_url("sqlite:///x/mlflow.db", "genops-vae", 3) == "models:/genops-vae/3"
    for fam in ("vae", "gan"):
        (tmp_path / "reports" / fam / "eval").mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "reports" / fam / "eval" / "samples.png")
    (tmp_path / "checkpoints" / "vae").mkdir(parents=True)
    (tmp_path / "checkpoints" / "vae" / "run.json").write_text(json.dumps({"run_id": "abc123"}))
    (tmp_path / "reports" / "registry").mkdir(parents=True)
    (tmp_path / "reports" / "registry" / "vae.json").write_text(json.dumps({"model": "genops-vae", "version": 3,
                                                                            "alias": "challenger"}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    @flow
    def publish() -> str:
        publish_artifacts(tmp_path, ["vae", "gan"])
        return str(flow_run.id)

    run_id = publish()
    arts = {a.key: a for a in prefect_client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))}
    assert arts["genops-vae-version"].data == \
        "[genops-vae v3 @challenger](http://127.0.0.1:5000/#/models/genops-vae/versions/3)"
    # The grid the evaluate stage logged to the family's MLflow run, from the server's artifact route.
    assert arts["genops-vae-samples"].data == \
        "http://127.0.0.1:5000/get-artifact?path=plots%2Fsamples.png&run_uuid=abc123"
    # No MLflow run recorded for a family: its local file.
    assert arts["genops-gan-samples"].data == (tmp_path / "reports" / "gan" / "eval" / "samples.png").as_uri()
    assert "hunter22" not in json.dumps([a.data for a in arts.values()])
    assert "genops-metrics" not in arts  # nothing evaluated (no metrics files): no table
    assert samples_url(uri, tmp_path, "pixelcnn") is None


def _events(client, name: str, resource_id: str | None = None):
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(event=EventNameFilter(name=[name]),
                      resource=EventResourceFilter(id=[resource_id]) if resource_id else None)
    return client.read_events(filter=flt, limit=50).events


@pytest.mark.integration
def test_a_promotion_emits_an_event_about_the_registered_model(prefect_client, pipeline_run):
    events = _wait_for(lambda: _events(prefect_client, "genops.model.promoted", "mlflow.registered-model.genops-vae"),
                       lambda evs: len(evs) >= 1, what="the promotion event")
    (event,) = events
    assert event.resource.id == "mlflow.registered-model.genops-vae" and event.resource.name == "genops-vae"
    assert event.payload["version"] == 3 and event.payload["metric"] == "fid"
    assert event.payload["value"] == 12.5 and event.payload["previous_champion"] == 2
    assert event.payload["reason"] == "beats the champion"
    # The event is tied to the flow run that promoted (so it shows on that run's page in the UI).
    related = {r.id for r in event.related}
    assert f"prefect.flow-run.{pipeline_run['flow_run_id']}" in related
    assert "mlflow.model-version.genops-vae.3" in related


@pytest.mark.integration
def test_only_new_champions_are_announced(prefect_client, tmp_path):
    from genops.orchestration.publish import emit_promotions

    reg = tmp_path / "reports" / "registry"
    reg.mkdir(parents=True)
    base = {"model": "genops-x", "version": 4, "primary_metric": "fid", "candidate_value": 1.0, "reason": "r"}
    (reg / "a.json").write_text(json.dumps({**base, "family": "a", "alias": "challenger"}))
    (reg / "b.json").write_text(json.dumps({**base, "family": "b", "alias": "champion", "already_registered": True}))
    (reg / "c.json").write_text(json.dumps({**base, "family": "c", "alias": "champion"}))
    records = [{"stage": f"register@{f}", "family": f, "status": "ran"} for f in "abc"]
    records.append({"stage": "register@d", "family": "d", "status": "skipped (unchanged)"})
    sent = emit_promotions(tmp_path, records)
    assert [s["resource"]["genops.family"] for s in sent] == ["c"]


def _retrain_module():
    """flows/retrain.py as a deployment loads it (a file, not a package), registered so Prefect finds its file."""
    import sys

    spec = importlib.util.spec_from_file_location("genops_retrain_entry", PROJECT / "flows" / "retrain.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_changed_data_emits_once_and_the_trigger_starts_the_retraining_deployment(prefect_client, tmp_path):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    from genops.orchestration.data_watch import DATA_CHANGED_EVENT, genops_data_watch, retrain_trigger

    root = tmp_path / "ws"
    for label in ("0", "1"):
        (root / "data" / "raw" / "toy" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), color=40 * i + int(label)).save(root / "data" / "raw" / "toy" / label / f"{i}.png")
    shutil.copy(PROJECT / "params.yaml", root / "params.yaml")
    shutil.copy(PROJECT / "dvc.yaml", root / "dvc.yaml")
    write_params(root, {"data.source": "data/raw/toy"})
    resource = "genops.dataset.data/raw/toy"

    # The retraining deployment as `python flows/retrain.py` serves it: its trigger becomes an automation.
    retrain = _retrain_module()
    scheduled = retrain.deployments(root)[0]
    deployment_id = scheduled.apply()

    first = genops_data_watch(str(root))
    assert first["baseline"] and not first["changed"] and first["event_id"] is None and first["files"] == 6
    assert not genops_data_watch(str(root))["changed"]  # nothing changed: no event
    Image.new("L", (8, 8), color=255).save(root / "data" / "raw" / "toy" / "1" / "0.png")  # new pixels
    changed = genops_data_watch(str(root))
    assert changed["changed"] and changed["event_id"] and changed["previous"] == first["hash"]
    again = genops_data_watch(str(root))
    assert not again["changed"] and again["event_id"] is None and again["hash"] == changed["hash"]

    events = _wait_for(lambda: _events(prefect_client, DATA_CHANGED_EVENT, resource), lambda evs: len(evs) >= 1,
                       what="the data-change event")
    time.sleep(2)  # a second (wrong) event would have been persisted by now
    events = _events(prefect_client, DATA_CHANGED_EVENT, resource)
    assert [str(e.id) for e in events] == [changed["event_id"]]
    assert events[0].payload["hash"] == changed["hash"] and events[0].payload["previous"] == first["hash"]

    # The automation fired: the retraining deployment got a flow run (no worker here runs it).
    runs = _wait_for(lambda: prefect_client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))),
        lambda rs: len(rs) >= 1, what="a flow run of the retraining deployment started by the trigger")
    assert len(runs) == 1 and runs[0].parameters == {"workspace": str(root)}
    automations = prefect_client.read_automations_by_name("genops-retrain-on-data-change")
    assert len(automations) == 1 and automations[0].trigger.expect == {DATA_CHANGED_EVENT}
    # One retraining at a time: a triggered run arriving during the cron's run is queued behind it.
    deployment = prefect_client.read_deployment(deployment_id)
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy == "ENQUEUE"

    # prefect.yaml declares the same trigger for `prefect deploy`.
    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    (yaml_trigger,) = next(d for d in spec["deployments"] if d["name"] == "scheduled")["triggers"]
    parsed = TypeAdapter(DeploymentTriggerTypes).validate_python(yaml_trigger)
    assert parsed.model_dump() == retrain_trigger().model_dump()


def test_the_watch_fingerprints_content_not_timestamps(tmp_path):
    import os

    from genops.orchestration.data_watch import fingerprint

    (tmp_path / "d").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "d" / "a.png")
    (tmp_path / "d" / "notes.txt").write_text("not an image: prepare ignores it")
    digest, files = fingerprint("d", tmp_path)
    assert list(files) == ["a.png"]
    os.utime(tmp_path / "d" / "a.png", (1, 1))  # touched, same bytes
    (tmp_path / "d" / "notes.txt").write_text("edited")
    assert fingerprint("d", tmp_path, files)[0] == digest
    assert fingerprint("digits", tmp_path)[0] != fingerprint("mnist5k", tmp_path)[0]


def test_output_lines_are_complete_bounded_and_rate_limited():
    import logging

    from genops.orchestration.logs import StageLineForwarder
    from genops.orchestration.runner import MAX_LINE_BYTES, LineSplitter

    got: list[str] = []
    split = LineSplitter(got.append)
    for chunk in (b"epoch 1 lo", b"ss 0.5\n\r 10%|#", b"   |\r 90%|#### |\r100%|#####|\r", b"\ndone\r\n",
                  b"\r" + b"x" * (3 * MAX_LINE_BYTES), b"y" * 10, b"\rlast, unterminated"):
        split.feed(chunk)
    split.close()
    assert got == ["epoch 1 loss 0.5", "100%|#####|", "done", "last, unterminated"]
    split.feed(b"z" * (4 * MAX_LINE_BYTES))  # a line that never ends holds at most MAX_LINE_BYTES
    split.close()
    assert len(got[-1]) == MAX_LINE_BYTES

    records: list[logging.LogRecord] = []
    logger = logging.getLogger("tests.stage-lines")
    logger.propagate, logger.level = False, logging.INFO
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        forward = StageLineForwarder(logger, "train@vae", rate_per_s=0.0, burst=5, max_lines=100, output=logger)
        for i in range(12):
            forward(f"line {i}")
        forward.close()
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records[:5]] == [f"line {i}" for i in range(5)]
    assert forward.sent == 5 and forward.dropped == 7
    assert records[-1].levelno == logging.WARNING and "7 output lines not forwarded" in records[-1].getMessage()


def test_a_source_dvc_does_not_track_is_not_watched(tmp_path):
    from genops.errors import GenopsError
    from genops.orchestration.data_watch import check_data

    (tmp_path / "elsewhere").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "elsewhere" / "a.png")
    shutil.copy(PROJECT / "dvc.yaml", tmp_path / "dvc.yaml")
    with pytest.raises(GenopsError, match=r"'elsewhere' .* is not a DVC dependency of prepare \(data/raw\)"):
        check_data(tmp_path, "elsewhere")
    (tmp_path / "data" / "raw" / "mine").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "data" / "raw" / "mine" / "a.png")
    assert check_data(tmp_path, "data/raw/mine")["files"] == 1
    assert check_data(tmp_path, "digits")["baseline"]  # a bundled dataset: nothing to track

"""prefect.yaml declares the retraining deployment (cron + data-change trigger) and the data watcher, on the work
pool the stack creates, with the same cron, trigger and interval as params.yaml and flows/retrain.py."""

from __future__ import annotations

import yaml

from genops.config import load_params
from genops.orchestration.data_watch import WATCH_INTERVAL_S, retrain_trigger
from genops.stack.layout import WORK_POOL
from tests.conftest import PROJECT


def _deployments() -> dict[str, dict]:
    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    return {d["name"]: d for d in spec["deployments"]}


def test_prefect_yaml_schedules_retraining_with_the_cron_of_params_yaml():
    deployment = _deployments()["scheduled"]
    schedule = load_params(PROJECT).schedule
    assert deployment["entrypoint"] == "flows/retrain.py:genops_retrain"
    assert (PROJECT / "flows" / "retrain.py").is_file()
    assert deployment["work_pool"]["name"] == WORK_POOL
    assert deployment["schedules"] == [{"cron": schedule.cron, "timezone": schedule.timezone}]


def test_prefect_yaml_retrains_on_data_change_one_run_at_a_time_and_polls_the_data():
    from prefect.events import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    deployments = _deployments()
    assert set(deployments) == {"scheduled", "poll"}
    (trigger,) = deployments["scheduled"]["triggers"]
    assert TypeAdapter(DeploymentTriggerTypes).validate_python(trigger).model_dump() == retrain_trigger().model_dump()
    assert deployments["scheduled"]["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    poll = deployments["poll"]
    assert poll["entrypoint"] == "flows/retrain.py:genops_data_watch"
    assert poll["work_pool"]["name"] == WORK_POOL
    assert poll["schedules"] == [{"interval": WATCH_INTERVAL_S}]

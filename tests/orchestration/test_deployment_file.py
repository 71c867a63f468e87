"""prefect.yaml declares the scheduled retraining deployment on the work pool the stack creates."""

from __future__ import annotations

import yaml

from genops.config import load_params
from genops.stack.layout import WORK_POOL
from tests.conftest import PROJECT


def test_prefect_yaml_schedules_retraining_with_the_cron_of_params_yaml():
    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    schedule = load_params(PROJECT).schedule
    assert deployment["entrypoint"] == "flows/retrain.py:genops_retrain"
    assert (PROJECT / "flows" / "retrain.py").is_file()
    assert deployment["work_pool"]["name"] == WORK_POOL
    assert deployment["schedules"] == [{"cron": schedule.cron, "timezone": schedule.timezone}]

"""Scheduled retraining: a Prefect deployment that re-runs the pipeline on the cron in params.yaml.

Start a Prefect server and serve the deployment (see README, "Scheduled retraining"):

    prefect server start &                                    # http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python flows/retrain.py        # serves 'genops-retrain/scheduled' and 'genops-data-watch/poll'

Each scheduled run executes the same DVC-driven flow as `genops pipeline`: stages whose data,
params or code did not change are skipped, new data (under data/raw, or a changed data.source)
retrains every family, and the registry promotes a new version only if it beats the champion.
Besides the cron, the retraining deployment has a trigger (an automation): it runs when a
`genops.data.changed` event arrives, which the poll deployment (genops.orchestration.data_watch) emits
every few minutes when the files behind data.source changed. `python flows/retrain.py --once` runs one
retraining right now instead of serving.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.schedules import Cron, Interval

from genops.config import load_params, project_root
from genops.orchestration.data_watch import WATCH_INTERVAL_S, genops_data_watch, retrain_trigger
from genops.orchestration.flow import genops_pipeline

__all__ = ["genops_data_watch", "genops_retrain", "main"]  # prefect.yaml's entrypoints
# One retraining at a time: a run the data trigger starts while the cron's is running waits for it.
CONCURRENCY = {"limit": 1, "collision_strategy": "ENQUEUE"}


@flow(name="genops-retrain", log_prints=True)
def genops_retrain(workspace: str | None = None, families: list[str] | None = None) -> dict:
    """Re-run the pipeline in `workspace` (default: the project root); unchanged stages are skipped."""
    root = Path(workspace) if workspace else project_root()
    return genops_pipeline(str(root), families=families, record=True)  # scheduled runs are recorded in git


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="run one retraining now instead of serving")
    args = parser.parse_args(argv)
    root = project_root()
    if args.once:
        genops_retrain(str(root))
        return
    serve(*deployments(root))


def deployments(root: Path) -> list:
    """The retraining deployment (cron + data-change trigger) and the data watcher that feeds the trigger."""
    schedule = load_params(root).schedule
    return [
        genops_retrain.to_deployment(
            name="scheduled",
            schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
            triggers=[retrain_trigger()],
            concurrency_limit=ConcurrencyLimitConfig(**CONCURRENCY),
            parameters={"workspace": str(root)},
            description="Retrain, evaluate, export and register every family on the configured cron and when "
                        "the training data changes",
            tags=["genops", "retraining"],
        ),
        genops_data_watch.to_deployment(
            name="poll",
            schedules=[Interval(WATCH_INTERVAL_S)],
            parameters={"workspace": str(root)},
            description="Emit genops.data.changed when the files behind data.source changed since the last look",
            tags=["genops", "data"],
        ),
    ]


if __name__ == "__main__":
    main()

"""Scheduled retraining: a Prefect deployment that re-runs the pipeline on the cron in params.yaml.

Start a Prefect server and serve the deployment (see README, "Scheduled retraining"):

    prefect server start &                                    # http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python flows/retrain.py                                   # serves 'genops-retrain/scheduled'

Each scheduled run executes the same DVC-driven flow as `genops pipeline`: stages whose data,
params or code did not change are skipped, new data (under data/raw, or a changed data.source)
retrains every family, and the registry promotes a new version only if it beats the champion.
`python flows/retrain.py --once` runs it right now instead of serving.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow
from prefect.schedules import Cron

from genops.config import load_params, project_root
from genops.orchestration.flow import genops_pipeline


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
    schedule = load_params(root).schedule
    genops_retrain.serve(
        name="scheduled",
        schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
        parameters={"workspace": str(root)},
        description="Retrain, evaluate, export and register every family on the configured cron",
        tags=["genops", "retraining"],
    )


if __name__ == "__main__":
    main()

"""The Prefect flow: the DVC stage graph as tasks, fanned out per family.

The stage graph is read from dvc.yaml at run time (genops.orchestration.dvc_graph), so there is no second
copy here that could drift. Per wave of independent stages the flow asks `dvc status` what changed, runs
only those stage commands as Prefect tasks (retried; training resumes from its checkpoint), records them
with `dvc commit`, and finally publishes artifacts (a summary, a metrics table, links to the registered versions,
sample grids) and a `genops.model.promoted` event per new champion (genops.orchestration.publish). Stage output
and `genops` log records go to the run's logs (genops.orchestration.logs).
`flows/pipeline.py` and `flows/retrain.py` are the entry points users and deployments run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from genops.config import load_params
from genops.errors import GenopsError, is_transient
from genops.orchestration.dvc_graph import StageInfo, changed_stages, commit_stages, stage_dag, stage_waves
from genops.orchestration.logs import StageLineForwarder, forward_genops_logs
from genops.orchestration.publish import emit_promotions, publish_artifacts, version_url
from genops.orchestration.runner import run_stage_command
from genops.orchestration.workspace import persist_overrides, smoke_workspace, workspace_lock
from genops.tracking.lineage import tag_recorded_versions
from genops.tracking.store import FLOW_RUN_ENV, tracking_uri
from genops.versioning.dvc import check_remote, out_hashes, push_to_remote, remote_configured
from genops.versioning.git import check_recordable, commit_run

# Waits before each retry of a transiently failed stage: together about two minutes, so a tracking server that is
# restarted (or a node that comes back) is waited for; a 5-second retry only meets the same outage again (measured
# by benchmarks/faults.py: an MLflow server restarted under load takes longer than that to answer).
RETRY_DELAYS_S = [10, 30, 90]


def retry_transient(task, task_run, state) -> bool:
    """Prefect's retry_condition_fn: retry a stage only when its failure can pass on its own (genops.errors).

    Validation failures, diverged training, a failed parity gate or a corrupt file fail the same way on every
    attempt; retrying them only hides the verdict and wastes compute."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001 - an unreadable result: do not retry blind
            return False
    return bool(getattr(exc, "transient", False)) or (isinstance(exc, BaseException) and is_transient(exc))


@task(retries=len(RETRY_DELAYS_S), retry_delay_seconds=RETRY_DELAYS_S, retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE,
      task_run_name="{stage.name}")
def run_stage(workspace: str, stage: StageInfo, in_process: bool = False, flow_run_id: str | None = None) -> dict:
    log = get_run_logger()
    log.info("running %s: %s", stage.name, stage.cmd)
    lines = StageLineForwarder(log, stage.name)
    try:
        # MLflow runs carry the flow run that made them (genops.prefect.flow_run_id).
        with forward_genops_logs():  # in-process stages log through `genops` loggers
            wall = run_stage_command(Path(workspace), stage, in_process=in_process,
                                     extra_env={FLOW_RUN_ENV: flow_run_id} if flow_run_id else None, on_line=lines)
    finally:
        lines.close()
    return {"stage": stage.name, "family": stage.family, "status": "ran", "wall_s": round(wall, 3)}


def _summary_markdown(root: Path, families: list[str], records: list[dict], timing: dict) -> str:
    lines = ["# genops pipeline", "", "| family | primary metric | value | version | alias | decision |",
             "|---|---|---|---|---|---|"]
    tracking = tracking_uri(root)
    for fam in families:
        metrics_path, reg_path = root / "metrics" / f"{fam}.json", root / "reports" / "registry" / f"{fam}.json"
        m = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        r = json.loads(reg_path.read_text()) if reg_path.is_file() else {}
        key = m.get("primary_metric", "-")
        version = r.get("version", "-")
        if r:  # the registered version in the MLflow UI (a server), else its models:/ URI
            url = version_url(tracking, r["model"], version)
            version = f"[{r['model']} v{version}]({url})" if url.startswith("http") else f"`{url}`"
        lines.append(f"| {fam} | {key} | {m.get(key, '-')} | {version} | {r.get('alias', '-')} | "
                     f"{r.get('reason', '-')} |")
    lines += ["", "| stage | status | wall s |", "|---|---|---|"]
    lines += [f"| {r['stage']} | {r['status']} | {r.get('wall_s', '')} |" for r in records]
    lines += ["", f"Flow wall time {timing['flow_wall_s']:.1f} s, stage compute {timing['stage_compute_s']:.1f} s, "
              f"orchestration overhead {timing['overhead_s']:.1f} s ({100 * timing['overhead_fraction']:.1f} %)."]
    return "\n".join(lines)


@flow(name="genops-pipeline", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def genops_pipeline(workspace: str, families: list[str] | None = None, record: bool | None = None) -> dict:
    """Run (only the changed parts of) the DVC pipeline in `workspace`.

    Stages of one wave run concurrently up to the task runner's max_workers
    (params.yaml `orchestration.max_parallel`, applied by genops.orchestration.run_pipeline).
    """
    with forward_genops_logs():  # `genops` records of this flow and its in-process stages reach the run's logs
        return _pipeline(workspace, families, record)


def _pipeline(workspace: str, families: list[str] | None, record: bool | None) -> dict:
    log = get_run_logger()
    root = Path(workspace)
    t0 = time.perf_counter()
    params = load_params(root)
    selected = families or params.all_families()
    recording = params.versioning.commit if record is None else record
    if recording:
        check_recordable(root)  # before any work: a run that cannot be recorded is refused up front
    check_remote(root)  # a remote the final `dvc push` cannot reach is refused now, not after training
    orchestration = params.orchestration
    # The run a person or a schedule started: the deployment's flow run when this flow runs inside it.
    root_run = str(flow_run.root_flow_run_id) if flow_run.id else None
    if orchestration.runner == "dask":
        records, failed = _run_dag(workspace, selected, root_run, orchestration.dask.threads_per_stage)
    else:
        # In-process stages share one interpreter, so only when they run one at a time.
        in_process = orchestration.in_process and orchestration.max_parallel == 1
        records, failed = _run_waves(workspace, selected, root_run, in_process)
    recorded = None
    if recording and not failed:
        recorded = _record(root, records)
        log.info("recorded the run as commit %s (%s)", recorded["commit"][:12], ", ".join(recorded["versions"]))
    pushed, not_pushed = None, []
    if not failed and remote_configured(root):
        # Data and checkpoints go to the shared remote (with the run-cache, so `dvc repro --pull` elsewhere
        # skips these stages); a fresh clone then `dvc pull`s them and `dvc status` is clean.
        t_push = time.perf_counter()
        log.info("dvc push --run-cache to the default remote ...")
        push = push_to_remote(root)
        records.append({"stage": "dvc push", "status": "ran", "wall_s": round(time.perf_counter() - t_push, 3)})
        pushed, not_pushed = push.summary, push.not_pushed
        log.info("dvc push: %s", pushed)
        if not_pushed:
            log.warning("dvc push: the remote lacks %d outputs dvc.lock records, which this workspace does not have "
                        "either (runs made elsewhere and never pushed; versions built on them cannot be restored): "
                        "%s", len(not_pushed), ", ".join(not_pushed))
    flow_wall = time.perf_counter() - t0
    compute = sum(r.get("wall_s", 0.0) for r in records)
    timing = {"flow_wall_s": round(flow_wall, 3), "stage_compute_s": round(compute, 3),
              "overhead_s": round(flow_wall - compute, 3),
              "overhead_fraction": round((flow_wall - compute) / flow_wall, 4) if flow_wall else 0.0}
    summary = {"workspace": str(root), "families": selected, "stages": records, **timing, "failed": failed,
               "dvc_push": pushed, "not_pushed": not_pushed, "recorded": recorded}
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports" / "pipeline_run.json").write_text(json.dumps(summary, indent=2) + "\n")
    create_markdown_artifact(key="genops-pipeline", markdown=_summary_markdown(root, selected, records, timing),
                             description="genops pipeline: metrics and promotion decisions")
    comparison = root / "reports" / "comparison" / "comparison.md"
    if comparison.is_file():
        create_markdown_artifact(key="genops-comparison", markdown=comparison.read_text(),
                                 description="genops: all families side by side (reports/comparison)")
    for promo in emit_promotions(root, records):  # first: automations may wait on these
        log.info("event %s: %s v%s", promo["event"], promo["payload"]["model"], promo["payload"]["version"])
    publish_artifacts(root, selected)
    if failed:
        raise GenopsError("pipeline failed:\n" + "\n".join(f"- {k}: {v}" for k, v in failed.items()))
    return summary


@task(retries=len(RETRY_DELAYS_S), retry_delay_seconds=RETRY_DELAYS_S, retry_condition_fn=retry_transient,
      cache_policy=NO_CACHE,
      task_run_name="{stage.name}")
def run_stage_if_changed(workspace: str, stage: StageInfo, flow_run_id: str | None, threads: int) -> dict:
    """One stage on a (Dask) worker: ask DVC whether it changed, run its command in a subprocess, record it.
    Results travel through the workspace files and the tracking server, never through worker memory."""
    root = Path(workspace)
    if stage.name not in changed_stages(root, [stage.name]):
        return {"stage": stage.name, "family": stage.family, "status": "skipped (unchanged)"}
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           **({FLOW_RUN_ENV: flow_run_id} if flow_run_id else {})}
    log = get_run_logger()
    lines = StageLineForwarder(log, stage.name)
    try:
        with forward_genops_logs():  # this runs on a Dask worker: the flow's handler is in another process
            wall = run_stage_command(root, stage, in_process=False, extra_env=env, on_line=lines)
            commit_stages(root, [stage.name])
    finally:
        lines.close()
    return {"stage": stage.name, "family": stage.family, "status": "ran", "wall_s": round(wall, 3)}


def _run_waves(workspace: str, families: list[str], root_run: str | None, in_process: bool) -> tuple[list, dict]:
    """The local runner: DVC's stages a wave at a time; per wave ask `dvc status`, run the changed stages
    (threads, or in this process), `dvc commit` them. A failed family stops, the others go on."""
    log = get_run_logger()
    root = Path(workspace)
    records: list[dict] = []
    failed: dict[str, str] = {}  # stage -> error
    for wave in stage_waves(root, families):
        stopped = _failed_families(failed)
        runnable = [s for s in wave if None not in stopped and s.family not in stopped]
        changed = changed_stages(root, [s.name for s in runnable])
        for s in runnable:
            if s.name not in changed:
                records.append({"stage": s.name, "family": s.family, "status": "skipped (unchanged)"})
        futures = {s.name: run_stage.submit(workspace, s, in_process, root_run)
                   for s in runnable if s.name in changed}
        done = []
        for name, fut in futures.items():
            try:
                records.append(fut.result())
                done.append(name)
            except Exception as exc:  # noqa: BLE001 - recorded, then re-raised at the end
                failed[name] = str(exc)
                records.append({"stage": name, "status": "failed"})
                log.error("%s failed: %s", name, exc)
        commit_stages(root, done)
    return records, failed


def _run_dag(workspace: str, families: list[str], root_run: str | None, threads: int) -> tuple[list, dict]:
    """Every stage submitted at once, each waiting only for its own upstream stages (Prefect wait_for).

    A shared stage after the families (compare) is submitted once the family stages have finished, whatever
    their outcome, so it runs with the families that succeeded, as the local runner's last wave does: a failed
    family stops only its own downstream stages."""
    log = get_run_logger()
    futures, upstream, family_of, after_families = {}, {}, {}, []
    for stage, ups in stage_dag(Path(workspace), families):
        upstream[stage.name] = [u for u in ups if u in futures or u in family_of]
        family_of[stage.name] = stage.family
        if stage.family is None and any(family_of[u] for u in upstream[stage.name]):
            after_families.append(stage)
            continue
        futures[stage.name] = run_stage_if_changed.submit(workspace, stage, root_run, threads,
                                                          wait_for=[futures[u] for u in upstream[stage.name]])
    records: list[dict] = []
    failed: dict[str, str] = {}
    not_run: set[str] = set()  # stages skipped because an upstream stage failed

    def collect(name: str, fut, ignore_families: bool) -> None:
        try:
            records.append(fut.result())
        except Exception as exc:  # noqa: BLE001 - recorded, then re-raised at the end
            blocked = [u for u in upstream[name] if (u in failed or u in not_run)
                       and not (ignore_families and family_of[u])]
            if blocked:
                not_run.add(name)
                records.append({"stage": name, "status": f"not run (upstream {blocked[0]} failed)"})
            else:
                failed[name] = str(exc)
                records.append({"stage": name, "status": "failed"})
                log.error("%s failed: %s", name, exc)

    for name, fut in futures.items():
        collect(name, fut, False)
    for stage in after_families:
        shared_failed = [u for u in upstream[stage.name] if family_of[u] is None and (u in failed or u in not_run)]
        if shared_failed:
            not_run.add(stage.name)
            records.append({"stage": stage.name, "status": f"not run (upstream {shared_failed[0]} failed)"})
            continue
        collect(stage.name, run_stage_if_changed.submit(workspace, stage, root_run, threads), True)
    return records, failed


def _record(root: Path, records: list[dict]) -> dict:
    """Commit dvc.lock + params.yaml, then tag the versions registered in this run with that commit."""
    ran = {r["family"] for r in records if r.get("status") == "ran" and r["stage"].startswith("register")}
    registrations = [json.loads((root / "reports" / "registry" / f"{fam}.json").read_text()) for fam in sorted(ran)]
    trained = sorted({r["family"] for r in records if r.get("status") == "ran" and r.get("family")})
    decisions = [f"{r['model']} v{r['version']} @{r['alias']} ({r['primary_metric']} {r['candidate_value']:.4g})"
                 for r in registrations]
    message = (f"genops: recorded run ({', '.join(trained) or 'nothing re-ran'})\n\n"
               + ("\n".join(f"- {d}" for d in decisions) or "- no new versions registered") + "\n")
    commit = commit_run(root, message)
    versions = tag_recorded_versions(root, registrations, commit, out_hashes(root))
    return {"commit": commit, "versions": versions, "decisions": decisions}


def _failed_families(failed: dict[str, str]) -> set[str | None]:
    """Families whose stages failed; None means a shared stage (prepare/validate) failed: stop all."""
    return {name.split("@", 1)[1] if "@" in name else None for name in failed}


def _task_runner(orchestration):
    """Threads by default; prefect-dask's DaskTaskRunner (a LocalCluster, or an existing scheduler) for dask."""
    if orchestration.runner == "local":
        return ThreadPoolTaskRunner(max_workers=orchestration.max_parallel)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise GenopsError("orchestration.runner=dask needs prefect-dask: pip install -e '.[dask]'") from None

    dask = orchestration.dask
    if dask.address:
        return DaskTaskRunner(address=dask.address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": dask.n_workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def run_pipeline(root: Path, families: list[str] | None = None, smoke: bool = False,
                 overrides: list[str] | None = None, shared_tracking: bool = False) -> dict:
    """Entry point of `genops pipeline`: choose the workspace, then run the flow over it.

    A smoke run logs to a scratch MLflow store of its own unless `shared_tracking` is asked for explicitly: then
    it uses MLFLOW_TRACKING_URI (e.g. the team's server), under the smoke `tracking.experiment` and
    `tracking.model_prefix` (genops-smoke), so it never touches the real models' names or aliases."""
    overrides = list(overrides or [])
    known = load_params(root).all_families()
    unknown = [f for f in families or [] if f not in known]
    if unknown:
        raise GenopsError(f"--families {','.join(unknown)}: not in params.yaml `families` or `stacked` "
                          f"({', '.join(known)})")
    if shared_tracking and not (smoke and os.environ.get("MLFLOW_TRACKING_URI")):
        raise GenopsError("--shared-tracking is for a --smoke run against the tracking server in "
                          "MLFLOW_TRACKING_URI (source the stack's env file); it is not set" if smoke else
                          "--shared-tracking only applies to --smoke (a full run always uses MLFLOW_TRACKING_URI)")
    with workspace_lock(root):
        if smoke:
            workspace = smoke_workspace(root, overrides)
            if not shared_tracking:
                os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workspace / 'mlflow.db'}"
        else:
            workspace = root
            persist_overrides(root, overrides)
        orchestration = load_params(workspace).orchestration
        flow_fn = genops_pipeline.with_options(task_runner=_task_runner(orchestration))
        return flow_fn(str(workspace), families=families)

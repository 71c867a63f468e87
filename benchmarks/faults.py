"""Fault injection into real pipeline runs at tiny sizes -> benchmarks/faults.json (trials / survived / lost per fault).

    .venv/bin/python benchmarks/faults.py                    # every kind at volume (~1 hour on 2 CPU cores)
    .venv/bin/python benchmarks/faults.py --kinds kill,corrupt --kill-trials 3 --seed 1 --jobs 1

Each trial works in a fresh clone of this repository's HEAD (its own git + DVC repo, SQLite MLflow store or a
local `mlflow server`, Prefect home), trains the `vae` family at test sizes and checks, after the fault and a
rerun, what a team relies on:

- kill:      `genops pipeline` killed with SIGKILL (its whole process group) at a seeded random moment inside a
             phase, cycling over every stage (prepare, validate, evaluator, sweep, train, evaluate, export, register,
             compare), the `dvc commit` that follows a stage, and the final `dvc push` to the workspace's DVC
             remote (a local folder); the moment is a seeded fraction of that phase's length in the uninterrupted
             reference run, and the phase the kill really landed in is recorded. The rerun must finish, its final
             weights and metrics must equal the reference's bit for bit (CPU), every registered version must hold
             all its files with the hashes recorded in its tags, @champion must resolve to such a version, exactly
             one version may exist (the same files are never registered twice), `dvc status` must be clean and
             the remote must hold every output (`dvc status --cloud`).
- twice:     a second `genops pipeline` started in the same workspace while the first runs: it must be refused at
             once with a message naming the running one; the first must finish and pass the same checks.
- tracking:  the MLflow server (local `mlflow server` on 127.0.0.1, SQLite backend) killed as register starts and
             restarted after each of TRACKING_DOWN_S: outages shorter than the retry schedule (flow.RETRY_DELAYS_S,
             10 + 30 + 90 s) must be bridged by Prefect's retries of the transient failure and register exactly
             one complete version; a longer one must fail the run with the server named and nothing half
             registered, and a rerun once the server is back must register exactly one complete version.
- worker:    on the team stack (`genops stack up`: PostgreSQL, SeaweedFS, MLflow, Prefect, the stack's worker), a
             deployment run of the retraining flow; the worker and every process under it (the flow run too, as
             a lost host would leave it) killed with SIGKILL while the flow trains; `genops stack up` restarts
             only the worker; the dead run must turn CRASHED (the stack's heartbeat automation,
             stack/zombies.py), not stay RUNNING; and a new deployment run must complete with complete
             versions, a clean `dvc status` and the S3 remote full.
- restart:   on the same stack, `genops stack down` + `genops stack up` while a `genops pipeline` against it trains:
             the run must finish (Prefect's retries bridge the outage) or fail clearly, and a rerun must leave
             complete versions, a clean workspace and a full remote.
- together:  three pipelines in three clones started at once against one MLflow server: all finish, three
             complete versions, @champion on a complete one, each clone's weights equal to the reference's.
- disk_full: the finished workspace copied onto a small tmpfs filled up to a few kB (needs root for `mount`):
             `genops export` and `genops train` (a new fingerprint) must fail with a clear message, the previous
             export and checkpoint intact (same hashes).
- corrupt:   a bit flipped in the checkpoint's weights, a truncated ONNX graph, a truncated training state: each
             must be refused by the stage that reads it, naming the file, with nothing loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from genops.storage.integrity import sha256_of

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUT = ROOT / "benchmarks" / "faults.json"
FAMILY = "vae"
# Test sizes (as tests/conftest.py TINY), with enough steps and checkpoints that a kill can land inside training.
SETTINGS = {
    "families": [FAMILY], "stacked": {}, "data.limit": 300, "train.steps": 60, "train.snapshots": [0.5],
    "train.batch_size": 32, "train.checkpoint_every": 10, "train.log_every": 10, "train.progress": False,
    "evaluate.curve_samples": 16, "evaluate.speed_samples": 32, "evaluate.iw_samples": 2, "evaluate.nll_subset": 32,
    "evaluate.grid_size": 16, "evaluate.n_samples": 48, "evaluate.n_reference": 64, "evaluate.kid_subsets": 5,
    "evaluate.kid_subset_size": 24, "evaluator.steps": 20, "evaluator.width": 8, "validation.min_rows": 50,
    "validation.min_per_class": 2, "vae.widths": [8, 16],
}
STAGES = ["prepare", "validate", "evaluator", "sweep@0", f"train@{FAMILY}", f"evaluate@{FAMILY}", f"export@{FAMILY}",
          f"register@{FAMILY}", "compare"]
KILL_PHASES = [s.split("@")[0] for s in STAGES] + ["commit", "push"]
COMMIT_AFTER = ["prepare", f"train@{FAMILY}", f"export@{FAMILY}", f"register@{FAMILY}"]  # outputs worth committing
PUSH_MARK = "dvc push --run-cache to the default remote"
TRACKING_DOWN_S = [3, 15, 45, 100, 200]  # the retries bridge 10 + 30 + 90 s (plus MLflow's own client retries)
RETRY_BUDGET_S = 130


def _env(work: Path, tracking: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(work / "prefect"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
           "MLFLOW_TRACKING_URI": tracking or f"sqlite:///{work / 'mlflow.db'}",
           # a dead server is reported in seconds, not after MLflow's default two minutes of backoff
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
           "GIT_AUTHOR_NAME": "faults", "GIT_AUTHOR_EMAIL": "f@f", "GIT_COMMITTER_NAME": "faults",
           "GIT_COMMITTER_EMAIL": "f@f", "OMP_NUM_THREADS": "1"}
    for key in ("GENOPS_ROOT", "DVC_ROOT", "PREFECT_API_URL"):
        env.pop(key, None)
    return env


def _workspace(work: Path) -> Path:
    """A fresh clone of HEAD with the test sizes written into its params.yaml."""
    import yaml

    sys.path.insert(0, str(ROOT / "src"))
    from genops.config import apply_overrides

    root = work / "ws"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(root)], check=True)
    params = apply_overrides(yaml.safe_load((root / "params.yaml").read_text()), SETTINGS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (work / "prefect").mkdir(parents=True, exist_ok=True)
    # a DVC remote (a local folder, in the untracked config.local) so the flow ends with `dvc push`
    subprocess.run([str(BIN / "dvc"), "remote", "add", "--local", "-d", "faults", str(work / "remote")], cwd=root,
                   check=True, capture_output=True)
    return root


def _pipeline(root: Path, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "genops"), "pipeline"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _run(cmd: list[str], root: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)


class _Watch:
    """Drains a pipeline's stderr in a thread (a full pipe would stall it), timestamping every line, and
    remembering the last phase marker seen: which stage was running, when."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.t0, self.lines = proc, time.monotonic(), []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic() - self.t0, line))

    def wait_for(self, marker: str, timeout: float = 900) -> float | None:
        """Seconds since start at which a line holding `marker` appeared, or None at the end or the timeout."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for t, line in self.lines[seen:]:
                if marker in line:
                    return t
            seen = len(self.lines)
            if not self._thread.is_alive() and seen == len(self.lines):
                return None
            time.sleep(0.02)
        return None

    def marks(self) -> list[tuple[float, str]]:
        """(time, phase) for every stage start and the push, in order."""
        out = []
        for t, line in self.lines:
            if line.startswith("--- "):
                out.append((t, line[4:].split(":", 1)[0]))
            elif PUSH_MARK in line:
                out.append((t, "push"))
        return out

    def phase_at(self, t: float) -> str | None:
        before = [name for at, name in self.marks() if at <= t]
        return before[-1] if before else None

    def text(self) -> str:
        self._thread.join(timeout=30)
        return "".join(line for _, line in self.lines)


def _weights(root: Path) -> dict[str, str]:
    from safetensors.torch import load_file

    tensors = load_file(str(root / "checkpoints" / FAMILY / "weights.safetensors"))
    return {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in sorted(tensors.items())}


def _metrics(root: Path) -> dict:
    m = json.loads((root / "metrics" / f"{FAMILY}.json").read_text())
    return {k: v for k, v in m.items() if isinstance(v, int | float) and not any(
        t in k for t in ("_per_s", "wall", "latency", "_s"))}


def _registry(root: Path, env: dict) -> dict:
    """Versions of the family's model, each checked: all files present with the hashes of its tags."""
    code = f"""
import json, sys
from pathlib import Path
from mlflow import MlflowClient
from genops.storage.integrity import sha256_of
client = MlflowClient()
name = "genops-{FAMILY}"
out = {{"versions": [], "champion": None}}
import tempfile
import mlflow
for mv in client.search_model_versions(f"name = '{{name}}'"):
    src = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{{name}}/{{mv.version}}",
                                                   dst_path=tempfile.mkdtemp()))
    files = {{p.name: p for p in src.rglob("artifacts/genops/*")}}
    recorded = {{k.removeprefix("genops.sha256."): v for k, v in mv.tags.items() if k.startswith("genops.sha256.")}}
    complete = bool(recorded) and all(n in files and sha256_of(files[n]) == h for n, h in recorded.items())
    out["versions"].append({{"version": mv.version, "complete": complete, "files": len(recorded),
                             "fingerprint": mv.tags.get("genops.fingerprint")}})
try:
    out["champion"] = client.get_model_version_by_alias(name, "champion").version
except Exception as exc:
    out["champion_error"] = str(exc)[:200]
print(json.dumps(out))
"""
    proc = _run([str(BIN / "python"), "-c", code], root, env)
    if proc.returncode:
        return {"error": proc.stderr[-500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _checks(root: Path, env: dict, reference: dict | None, versions_before: int = 0) -> dict:
    """What must hold after any fault and rerun; `ok` is all of them. `versions_before`: versions the registry
    held before the trial (a shared one), so `one_version` counts only what the trial registered."""
    reg = _registry(root, env)
    versions = reg.get("versions", [])
    status = _run(["dvc", "status"], root, env)
    out = {
        "registry_versions": len(versions),
        "registry_complete": bool(versions) and all(v["complete"] for v in versions),
        "one_version": len(versions) - versions_before == 1,
        "champion_complete": any(v["version"] == reg.get("champion") and v["complete"] for v in versions),
        "dvc_clean": status.returncode == 0 and "up to date" in status.stdout,
    }
    cloud = _run(["dvc", "status", "--cloud", "--json"], root, env)
    out["remote_complete"] = cloud.returncode == 0 and json.loads(cloud.stdout or "{}") == {}
    if not out["remote_complete"]:
        out["remote_missing"] = (cloud.stdout or cloud.stderr)[:400]
    if reference is not None:
        out["weights_equal"] = _weights(root) == reference["weights"]
        out["metrics_equal"] = _metrics(root) == reference["metrics"]
    out["ok"] = all(v for k, v in out.items() if k not in ("registry_versions", "remote_missing"))
    return out


def _kill_tree(root_pid: int) -> list[int]:
    """SIGKILL a process and all its descendants: Prefect's process worker starts each flow run in a session of
    its own, so killing the worker's group would leave the run alive (not a lost host)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    killed = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
            killed.append(proc.pid)
    return killed


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def reference_run(work: Path) -> dict:
    """An uninterrupted run: its weights and metrics, and each phase's start and length (the kill moments)."""
    root = _workspace(work)
    env = _env(work)
    t0 = time.perf_counter()
    proc = _pipeline(root, env)
    watch = _Watch(proc)
    out = proc.stdout.read()
    proc.wait()
    if proc.returncode:
        raise SystemExit(f"the uninterrupted reference run failed:\n{watch.text()[-3000:]}")
    summary = json.loads(out)
    walls = {s["stage"]: s.get("wall_s", 0.0) for s in summary["stages"]}
    marks = watch.marks()
    end = time.perf_counter() - t0
    windows = {}
    for i, (t, name) in enumerate(marks):
        nxt = marks[i + 1][0] if i + 1 < len(marks) else end
        windows[name] = {"start_s": round(t, 2), "until_next_s": round(nxt - t, 2),
                         "command_s": walls.get(name, walls.get("dvc push", 0.0))}
    return {"weights": _weights(root), "metrics": _metrics(root), "wall_s": round(end, 1), "windows": windows,
            "checks": _checks(root, env, None)}


def kill_plan(n: int, phases: list[str], rng: random.Random, reference: dict) -> list[dict]:
    """Seeded kill moments, drawn before any trial runs (so trials can run in parallel and stay the same)."""
    plans = []
    for i in range(n):
        phase = phases[i % len(phases)]
        frac = rng.uniform(0.05, 0.95)
        if phase == "commit":  # between a stage's command ending and the next stage: its `dvc commit`
            stage = rng.choice(COMMIT_AFTER)
            w = reference["windows"][stage]
            gap = max(0.3, w["until_next_s"] - w["command_s"])
            plans.append({"phase": "commit", "after": stage, "marker": f"--- {stage}:",
                          "delay_s": round(w["command_s"] + frac * gap, 2)})
        else:
            name = "push" if phase == "push" else next(s for s in STAGES if s.split("@")[0] == phase)
            w = reference["windows"][name]
            length = w["command_s"]  # the command itself (the push: `dvc push`'s own wall time)
            plans.append({"phase": phase, "marker": PUSH_MARK if name == "push" else f"--- {name}:",
                          "delay_s": round(frac * max(0.2, length), 2)})
    return plans


def kill_trial(work: Path, plan: dict, reference: dict) -> dict:
    root = _workspace(work)
    env = _env(work)
    proc = _pipeline(root, env)
    watch = _Watch(proc)
    seen = watch.wait_for(plan["marker"])
    if seen is None:
        proc.wait()
        return {**plan, "killed": False, "note": "the phase never started", "ok": False}
    time.sleep(max(0.0, plan["delay_s"] - (time.monotonic() - watch.t0 - seen)))
    at = time.monotonic() - watch.t0
    finished_first = proc.poll() is not None
    _kill_group(proc)
    rerun = _run([str(BIN / "genops"), "pipeline"], root, env)
    result = {**plan, "killed": not finished_first, "killed_at_s": round(at, 2), "landed_in": watch.phase_at(at),
              "after_marker_s": round(at - seen, 2),
              "rerun_exit": rerun.returncode, **_checks(root, env, reference)}
    result["ok"] = result["ok"] and rerun.returncode == 0
    if rerun.returncode:
        result["rerun_stderr"] = rerun.stderr[-800:]
    return result


def twice_trial(work: Path, reference: dict) -> dict:
    root = _workspace(work)
    env = _env(work)
    first = _pipeline(root, env)
    watch = _Watch(first)
    watch.wait_for(f"--- train@{FAMILY}")
    second = _run([str(BIN / "genops"), "pipeline"], root, env)
    refused = second.returncode != 0 and "another genops pipeline is running" in second.stderr
    first.stdout.read()
    first.wait()
    result = {"second_refused": refused, "second_message": second.stderr.strip().splitlines()[-1][:300],
              "first_exit": first.returncode, **_checks(root, env, reference)}
    result["ok"] = result["ok"] and refused and first.returncode == 0
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_server(work: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{work / 'server.db'}",
                             "--artifacts-destination", str(work / "server-artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return proc
        time.sleep(0.5)
    _kill_group(proc)
    raise SystemExit("mlflow server did not start")


def tracking_trial(work: Path, down_s: float) -> dict:
    root = _workspace(work)
    port = _free_port()
    server = _mlflow_server(work, port)
    env = _env(work, f"http://127.0.0.1:{port}")
    proc = _pipeline(root, env)
    watch = _Watch(proc)
    watch.wait_for(f"--- register@{FAMILY}")
    _kill_group(server)  # the server goes away as registration starts ...
    time.sleep(down_s)
    server = _mlflow_server(work, port)
    proc.stdout.read()
    proc.wait()
    err = watch.text()
    retries = [line for line in err.splitlines() if "Task run failed with" in line and " - Retry " in line]
    bridged = down_s < RETRY_BUDGET_S
    result: dict = {"down_s": down_s, "pipeline_exit": proc.returncode, "retries": len(retries)}
    if proc.returncode == 0:
        checks = _checks(root, env, None)
        result.update(checks, ok=checks["ok"] and bridged)
    else:
        last = (err.strip().splitlines() or [""])[-1]
        named = f"127.0.0.1:{port}" in err or "tracking" in err.lower()
        before = _registry(root, env)
        rerun = _run([str(BIN / "genops"), "pipeline"], root, env)
        checks = _checks(root, env, None)
        result.update({"failed_clearly": named, "message": last[-300:],
                       "half_registered": any(not v["complete"] for v in before.get("versions", [])),
                       "rerun_exit": rerun.returncode}, **checks)
        result["ok"] = (not bridged and named and not result["half_registered"] and rerun.returncode == 0
                        and checks["ok"])
    _kill_group(server)
    return result


def together_trial(work: Path, reference: dict, n: int = 3) -> dict:
    port = _free_port()
    work.mkdir(parents=True, exist_ok=True)
    server = _mlflow_server(work, port)
    tracking = f"http://127.0.0.1:{port}"
    roots = [_workspace(work / f"p{i}") for i in range(n)]
    envs = [_env(work / f"p{i}", tracking) for i in range(n)]
    procs = [_pipeline(r, e) for r, e in zip(roots, envs)]
    watches = [_Watch(p) for p in procs]
    for p in procs:
        p.stdout.read()
        p.wait()
    reg = _registry(roots[0], envs[0])
    versions = reg.get("versions", [])
    status = [_run(["dvc", "status"], r, e) for r, e in zip(roots, envs)]
    result = {"pipelines": n, "exits": [p.returncode for p in procs], "registry_versions": len(versions),
              "registry_complete": bool(versions) and all(v["complete"] for v in versions),
              "champion_complete": any(v["version"] == reg.get("champion") and v["complete"] for v in versions),
              "dvc_clean": all(s.returncode == 0 and "up to date" in s.stdout for s in status),
              "weights_equal": all(_weights(r) == reference["weights"] for r in roots)}
    result["ok"] = (all(e == 0 for e in result["exits"]) and len(versions) == n and result["registry_complete"]
                    and result["champion_complete"] and result["dvc_clean"] and result["weights_equal"])
    if not result["ok"]:
        result["stderr"] = [w.text()[-600:] for w in watches]
    _kill_group(server)
    return result


def _stack(work: Path) -> tuple[Path, dict[str, str]]:
    """`genops stack up` on free ports in `work` (PostgreSQL runs as `postgres`: the folder must be reachable)."""
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    folder = work / "stack"
    env = {k: v for k, v in _env(work).items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    proc = _run([str(BIN / "genops"), "-q", "stack", "up", "--dir", str(folder), "--free-ports"], work, env)
    if proc.returncode:
        raise RuntimeError(f"stack up failed: {proc.stderr[-1500:]}")
    client = {}
    for line in (folder / "stack.env").read_text().splitlines():
        if line.startswith("export "):
            key, value = line[len("export "):].split("=", 1)
            client[key] = value
    return folder, client


def _stack_cmd(folder: Path, work: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    env = {k: v for k, v in _env(work).items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    t0 = time.perf_counter()
    proc = _run([str(BIN / "genops"), "-q", "stack", *args, "--dir", str(folder)], work, env)
    return time.perf_counter() - t0, proc


def _stack_workspace(work: Path, client: dict[str, str]) -> tuple[Path, dict[str, str]]:
    root = _workspace(work)
    env = {**_env(work), **client}
    # the deployment records its runs in git: the test sizes are committed, so the tree is clean
    subprocess.run(["git", "commit", "-qam", "faults: test sizes"], cwd=root, env=env, check=True)
    subprocess.run([str(BIN / "dvc"), "remote", "remove", "--local", "faults"], cwd=root, capture_output=True)
    proc = _run([str(BIN / "genops"), "stack", "connect"], root, env)
    if proc.returncode:
        raise RuntimeError(f"stack connect failed: {proc.stderr[-800:]}")
    return root, env


def _flow_state(flow_run_id: str, root: Path, env: dict) -> str:
    out = _run([str(BIN / "prefect"), "flow-run", "inspect", flow_run_id], root, env).stdout
    for word in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", "RUNNING", "PENDING", "SCHEDULED", "LATE"):
        if f"StateType.{word}" in out or f"'type': '{word}'" in out:
            return word
    return "UNKNOWN"


def _deployment_run(root: Path, env: dict) -> str:
    out = _run([str(BIN / "prefect"), "deployment", "run", "genops-retrain/scheduled"], root, env).stdout
    return next(w for w in out.split() if w.count("-") == 4 and len(w) == 36)


def _wait_state(flow_run_id: str, root: Path, env: dict, states: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        state = _flow_state(flow_run_id, root, env)
        if state in states:
            return state
        time.sleep(2)
    return state


def stack_trials(work: Path, rng: random.Random) -> dict[str, dict]:
    """The worker and restart trials, on one stack (it takes a minute or more to start)."""
    folder, client = _stack(work)
    out: dict[str, dict] = {}
    try:
        out["worker"] = worker_trial(work / "worker", folder, client, rng.uniform(5, 25))
        out["restart"] = restart_trial(work / "restart", folder, client, rng.uniform(2, 10))
        out["reboot"] = reboot_trial(work / "restart", folder, client)
    finally:
        _stack_cmd(folder, work, "down")
    return out


def worker_trial(work: Path, folder: Path, client: dict, delay: float) -> dict:
    root, env = _stack_workspace(work, client)
    deploy = _run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], root, env)
    if deploy.returncode:
        return {"ok": False, "note": "prefect deploy failed", "stderr": deploy.stderr[-800:]}
    first = _deployment_run(root, env)
    state = _wait_state(first, root, env, {"RUNNING", "COMPLETED", "FAILED", "CRASHED"}, 300)
    deadline = time.monotonic() + 600  # until training has started (its checkpoint folder appears)
    while time.monotonic() < deadline and not (root / ".genops" / "work" / FAMILY).exists():
        time.sleep(0.5)
    time.sleep(delay)
    status = json.loads(_stack_cmd(folder, work, "status")[1].stdout or "{}")
    pid = (status.get("worker") or {}).get("pid")
    killed_while = _flow_state(first, root, env)
    killed_pids = _kill_tree(pid) if pid else []
    up_s, up = _stack_cmd(folder, work, "up")
    restarted = json.loads(up.stdout or "{}").get("service_startup_s", {}) if up.returncode == 0 else {}
    fate = _wait_state(first, root, env, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, 240)
    second = None
    if fate != "COMPLETED":
        second_id = _deployment_run(root, env)
        second = _wait_state(second_id, root, env, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, 600)
    checks = _checks(root, env, None)
    checks.pop("one_version", None)  # a killed run may have registered before it died: every version must be whole
    result = {"delay_s": round(delay, 1), "state_at_kill": state if killed_while == "UNKNOWN" else killed_while,
              "worker_pid_killed": pid, "processes_killed": len(killed_pids),
              "stack_up_s": round(up_s, 1), "restarted": sorted(restarted),
              "killed_run_final_state": fate, "second_run_state": second, **checks}
    only_worker = set(restarted) <= {"worker"}  # nothing else was down, so nothing else was restarted
    result["ok"] = only_worker and fate == "CRASHED" and second == "COMPLETED" and checks["ok"]
    return result


def restart_trial(work: Path, folder: Path, client: dict, delay: float) -> dict:
    root, env = _stack_workspace(work, client)
    before = len(_registry(root, env).get("versions", []))  # the stack's registry holds the worker trial's too
    proc = subprocess.Popen([str(BIN / "genops"), "pipeline"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    watch = _Watch(proc)
    if watch.wait_for(f"--- train@{FAMILY}") is None:
        proc.wait()
        return {"ok": False, "note": "the pipeline ended before training", "pipeline_exit": proc.returncode,
                "message": watch.text()[-600:]}
    time.sleep(delay)
    down_s, down = _stack_cmd(folder, work, "down")
    up_s, up = _stack_cmd(folder, work, "up")
    proc.stdout.read()
    proc.wait()
    err = watch.text()
    result: dict = {"delay_s": round(delay, 1), "down_s": round(down_s, 1), "up_s": round(up_s, 1),
                    "stack_back": up.returncode == 0, "pipeline_exit": proc.returncode,
                    "retries": sum(1 for line in err.splitlines() if " - Retry " in line)}
    if proc.returncode:
        result["message"] = (err.strip().splitlines() or [""])[-1][-300:]
        rerun = _run([str(BIN / "genops"), "pipeline"], root, env)
        result["rerun_exit"] = rerun.returncode
    checks = _checks(root, env, None, versions_before=before)
    result.update(checks, versions_before=before)
    result["ok"] = up.returncode == 0 and (proc.returncode == 0 or result.get("rerun_exit") == 0) and checks["ok"]
    return result


def reboot_trial(work: Path, folder: Path, client: dict) -> dict:
    """What a power loss leaves: every service SIGKILLed at once (PostgreSQL's postmaster.pid and every pidfile
    stale); `genops stack up` must start them all again with the registry and the remote's data intact."""
    root = work / "ws"
    env = {**_env(work), **client}
    before = _registry(root, env)
    status = json.loads(_stack_cmd(folder, work, "status")[1].stdout or "{}")
    killed = []
    for service, entry in status.items():
        if entry.get("pid"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if service == "postgres":  # the postmaster (its backends follow it)
                    os.kill(entry["pid"], signal.SIGKILL)
                else:  # the service's own process group
                    os.killpg(entry["pid"], signal.SIGKILL)
                killed.append(service)
    time.sleep(3)
    down = json.loads(_stack_cmd(folder, work, "status")[1].stdout or "{}")
    up_s, up = _stack_cmd(folder, work, "up")
    after_status = json.loads(_stack_cmd(folder, work, "status")[1].stdout or "{}")
    after = _registry(root, env)
    cloud = _run(["dvc", "status", "--cloud", "--json"], root, env)
    result = {"killed": killed, "running_after_kill": sorted(k for k, v in down.items() if v.get("running")),
              "stack_up_exit": up.returncode, "stack_up_s": round(up_s, 1),
              "running_after_up": sorted(k for k, v in after_status.items() if v.get("running")),
              "versions_before": len(before.get("versions", [])), "versions_after": len(after.get("versions", [])),
              "registry_complete": all(v["complete"] for v in after.get("versions", [])),
              "remote_complete": cloud.returncode == 0 and json.loads(cloud.stdout or "{}") == {}}
    if up.returncode:
        result["stderr"] = up.stderr[-800:]
    result["ok"] = (up.returncode == 0 and set(result["running_after_up"]) == set(status)
                    and result["versions_after"] == result["versions_before"] > 0 and result["registry_complete"]
                    and result["remote_complete"])
    return result


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_of(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def disk_full_trial(work: Path) -> dict:
    if os.geteuid() != 0:
        return {"skipped": "needs root to mount a tmpfs", "ok": None}
    src = _workspace(work)
    env = _env(work)
    first = _run([str(BIN / "genops"), "pipeline"], src, env)
    if first.returncode:
        return {"ok": False, "note": "the first run failed", "stderr": first.stderr[-500:]}
    used = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    mount = work / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={used + (64 << 20)}", "tmpfs", str(mount)], check=True)
    try:
        root = mount / "ws"
        shutil.copytree(src, root, symlinks=True)
        out: dict = {}
        for what, cmd, folder in (("export", ["genops", "export", FAMILY], root / "exported" / FAMILY),
                                  ("checkpoint", ["genops", "train", FAMILY, "--set", "train.steps=70"],
                                   root / "checkpoints" / FAMILY)):
            before = _tree_hashes(folder)
            filler = mount / "filler"
            stat = os.statvfs(mount)
            free = stat.f_bavail * stat.f_frsize
            with open(filler, "wb") as fh:  # leave 16 kB: less than any graph or checkpoint
                fh.truncate(0)
                fh.write(b"\0" * max(0, free - (16 << 10)))
            proc = _run([str(BIN / cmd[0]), *cmd[1:]], root, env)
            filler.unlink()
            clear = "disk full" in proc.stderr or "No space left" in proc.stderr
            intact = _tree_hashes(folder) == before
            out[what] = {"exit": proc.returncode, "clear_message": clear, "previous_intact": intact,
                         "message": (proc.stderr.strip().splitlines() or [""])[-1][:300]}
        out["ok"] = all(v["exit"] != 0 and v["clear_message"] and v["previous_intact"] for v in out.values())
        return out
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def corrupt_trial(work: Path) -> dict:
    root = _workspace(work)
    env = _env(work)
    first = _run([str(BIN / "genops"), "pipeline"], root, env)
    if first.returncode:
        return {"ok": False, "note": "the first run failed", "stderr": first.stderr[-500:]}
    cases = {}
    weights = root / "checkpoints" / FAMILY / "weights.safetensors"
    graph = root / "exported" / FAMILY / "sampler.onnx"
    for name, path, damage, cmd in (
            ("checkpoint_bit_flip", weights, "flip", ["genops", "evaluate", FAMILY]),
            ("onnx_truncated", graph, "truncate", ["genops", "register", FAMILY]),
            ("state_truncated", None, "truncate", ["genops", "train", FAMILY, "--set", "train.steps=70"])):
        if path is None:  # a resumable training state (as an interrupted run leaves), then truncated below
            import torch

            path = root / ".genops" / "work" / FAMILY / "ckpt-state.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"step": 10, "fingerprint": "x", "history": [], "padding": torch.zeros(4096)}, path)
        pristine = path.read_bytes()
        if damage == "flip":
            path.write_bytes(pristine[:-7] + bytes([pristine[-7] ^ 1]) + pristine[-6:])
        else:
            path.write_bytes(pristine[: len(pristine) // 2])
        proc = _run([str(BIN / cmd[0]), *cmd[1:]], root, env)
        message = (proc.stderr.strip().splitlines() or [""])[-1]
        detected = proc.returncode != 0 and path.name in proc.stderr and (
            "sha256" in proc.stderr or "not a plain tensor file" in proc.stderr)
        cases[name] = {"exit": proc.returncode, "detected": detected, "message": message[:300]}
        path.write_bytes(pristine)
    return {**cases, "ok": all(c["detected"] for c in cases.values())}


def _summarise(report: dict, trials: dict[str, list], out: Path) -> None:
    """Per kind: trials, survived, lost or corrupted; written after every trial, so a cut-short run keeps its rows."""
    for kind, rows in trials.items():
        counted = [r for r in rows if r.get("ok") is not None]
        report["kinds"][kind] = {
            "trials": len(counted), "survived": sum(bool(r["ok"]) for r in counted),
            "lost_or_corrupted": sum(1 for r in counted if not r.get("registry_complete", True)
                                     or r.get("weights_equal") is False or r.get("previous_intact") is False
                                     or not r.get("dvc_clean", True) or r.get("remote_complete") is False),
            "details": rows}
    out.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default="stack,twice,together,tracking,disk_full,corrupt,kill",
                        help="in the order run (stack: the worker and restart trials on one team stack)")
    parser.add_argument("--kill-phases", default=",".join(KILL_PHASES), help="phases a kill -9 lands in (cycled)")
    parser.add_argument("--kill-trials", type=int, default=2 * len(KILL_PHASES), help="kill -9 trials")
    parser.add_argument("--tracking-down", default=",".join(map(str, TRACKING_DOWN_S)),
                        help="seconds the tracking server stays down, one trial each")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--jobs", type=int, default=2, help="trials run at once (each is mostly one busy core)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="genops-faults-"))
    os.chmod(base, 0o755)  # PostgreSQL (the stack trials) runs as `postgres` and must reach its folder
    report: dict = {"commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                             text=True).stdout.strip(), "seed": args.seed, "family": FAMILY,
                    "jobs": args.jobs, "settings": SETTINGS, "kinds": {}}
    t0 = time.perf_counter()
    trials: dict[str, list] = {}
    try:
        reference = reference_run(base / "reference") if {"kill", "twice", "together"} & set(kinds) else None
        if reference:
            report["reference"] = {k: reference[k] for k in ("wall_s", "windows", "checks")}
            print("reference", report["reference"], flush=True)
        jobs: list[tuple[str, object]] = []
        for kind in kinds:
            if kind == "kill":
                plans = kill_plan(args.kill_trials, args.kill_phases.split(","), rng, reference)
                jobs += [("kill", lambda i=i, p=p: kill_trial(base / f"kill-{i}", p, reference))
                         for i, p in enumerate(plans)]
            elif kind == "stack":
                jobs.append(("stack", lambda: stack_trials(base / "stack", rng)))
            elif kind == "tracking":
                jobs += [("tracking", lambda d=d: tracking_trial(base / f"tracking-{d}", float(d)))
                         for d in args.tracking_down.split(",")]
            else:
                runs = {"twice": lambda: twice_trial(base / "twice", reference),
                        "together": lambda: together_trial(base / "together", reference),
                        "disk_full": lambda: disk_full_trial(base / "disk_full"),
                        "corrupt": lambda: corrupt_trial(base / "corrupt")}
                jobs.append((kind, runs[kind]))
        lock = threading.Lock()

        def one(kind: str, fn) -> None:
            row = fn()
            rows = row.items() if kind == "stack" else [(kind, row)]  # the stack job reports two kinds
            with lock:
                for name, r in rows:
                    trials.setdefault(name, []).append(r)
                    print(name, json.dumps(r)[:400], flush=True)
                _summarise(report, trials, args.out)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for future in [pool.submit(one, kind, fn) for kind, fn in jobs]:
                future.result()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    _summarise(report, trials, args.out)
    print(json.dumps({k: {m: v[m] for m in ("trials", "survived", "lost_or_corrupted")}
                      for k, v in report["kinds"].items()}, indent=2))


if __name__ == "__main__":
    main()

"""Helpers the Prefect flow uses to drive the DVC stage graph (no Prefect imports here).

dvc.yaml is the one description of the pipeline. The flow asks DVC for the stages and their
order, asks `dvc status` which of them changed, runs only those stage commands (several families
at once), and records the results with `dvc commit`, so after a flow run `dvc status` is clean and
a later `dvc repro` has nothing to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from genops.errors import GenopsError

_DVC_LOCK = threading.Lock()  # dvc holds a repo lock: its commands must not overlap


@dataclass(frozen=True)
class StageInfo:
    name: str  # e.g. "train@vae"
    cmd: str
    family: str | None  # the foreach item, None for shared stages


def stage_waves(root: Path, families: list[str] | None = None) -> list[list[StageInfo]]:
    """DVC's stages in dependency order, grouped so each group depends only on earlier groups."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph.reverse()  # DVC's edges point at dependencies; reverse = execution order
        waves = []
        for generation in nx.topological_generations(graph):
            wave = []
            for stage in sorted(generation, key=lambda s: s.name):
                name = stage.name
                family = name.split("@", 1)[1] if "@" in name else None
                if families is None or family is None or family in families:
                    cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
                    wave.append(StageInfo(name, cmd, family))
            if wave:
                waves.append(wave)
    return waves


def _dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([_dvc_exe(), *args], cwd=root, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise GenopsError(f"`dvc {' '.join(args)}` failed in {root}:\n{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _dvc_exe() -> str:
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.exists() else (shutil.which("dvc") or "dvc")


def changed_stages(root: Path, names: list[str]) -> set[str]:
    """Which of these stages DVC would re-run (deps, params, outs or command differ from dvc.lock)."""
    with _DVC_LOCK:
        out = _dvc(root, "status", "--json", *names)
    status = json.loads(out or "{}")
    return {name for name in names if name in status}


def commit_stages(root: Path, names: list[str]) -> None:
    """Record freshly produced outputs in dvc.lock (and the DVC cache)."""
    if names:
        with _DVC_LOCK:
            _dvc(root, "commit", "--force", "--quiet", *names)


def _in_process_argv(cmd: str) -> list[str] | None:
    """The argv of a plain `genops ...` command (no shell syntax), else None."""
    import shlex

    if any(ch in cmd for ch in "|&;<>$`\n"):
        return None
    argv = shlex.split(cmd)
    return argv[1:] if argv and argv[0] == "genops" else None


_IN_PROCESS_ENV = ("GENOPS_ROOT", "DVC_ROOT", "DVC_STAGE")


def run_stage_command(root: Path, stage: StageInfo, in_process: bool = False) -> float:
    """Run a stage's command as `dvc repro` would; returns its wall time in seconds.

    `in_process` runs a plain `genops ...` command inside this process (same argument parsing and
    stage function, minus the interpreter start and the torch/mlflow imports). Only for stages run
    one at a time: the environment variables the stage reads are process-wide.
    """
    argv = _in_process_argv(stage.cmd) if in_process else None
    if argv is not None:
        import json as _json

        from genops.cli import run_in_process

        saved = {k: os.environ.get(k) for k in _IN_PROCESS_ENV}
        os.environ.update({"GENOPS_ROOT": str(root), "DVC_ROOT": str(root), "DVC_STAGE": stage.name})
        sys.stderr.write(f"--- {stage.name}: {stage.cmd} (in process)\n")
        t0 = time.perf_counter()
        try:
            result = run_in_process(argv)
        except GenopsError as exc:
            raise GenopsError(f"stage {stage.name} (`{stage.cmd}`) failed:\n{exc}") from exc
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        if result is not None:
            sys.stderr.write(_json.dumps(result, indent=2, default=str)[:2000] + "\n")
        return time.perf_counter() - t0
    return _run_subprocess(root, stage)


def _run_subprocess(root: Path, stage: StageInfo) -> float:
    """Run the command in a shell, streaming its output (progress bars included) to our stderr."""
    import collections

    env = {**os.environ, "GENOPS_ROOT": str(root), "DVC_ROOT": str(root), "DVC_STAGE": stage.name}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    tail: collections.deque[str] = collections.deque(maxlen=20)
    t0 = time.perf_counter()
    sys.stderr.write(f"--- {stage.name}: {stage.cmd}\n")
    proc = subprocess.Popen(stage.cmd, shell=True, cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    pending = b""
    # Raw chunks, not lines: tqdm redraws with carriage returns and would otherwise stall until done.
    sink = getattr(sys.stderr, "buffer", None)
    while chunk := proc.stdout.read1(65536):
        sink.write(chunk) if sink else sys.stderr.write(chunk.decode(errors="replace"))
        sys.stderr.flush()
        *lines, pending = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
        tail.extend(x.decode(errors="replace") for x in lines if x.strip())
    if pending.strip():
        tail.append(pending.decode(errors="replace"))
    code = proc.wait()
    wall = time.perf_counter() - t0
    if code != 0:
        raise GenopsError(f"stage {stage.name} (`{stage.cmd}`) failed with exit code {code}:\n" + "\n".join(tail))
    return wall


def persist_overrides(root: Path, overrides: list[str]) -> None:
    """Write `--set` overrides into params.yaml, keeping its comments (as `dvc exp run -S` does)."""
    if not overrides:
        return
    from ruamel.yaml import YAML

    from genops.config import load_params, parse_override

    load_params(root, overrides)  # validates keys before anything is written
    yaml = YAML()
    path = root / "params.yaml"
    doc = yaml.load(path.read_text())
    for key, value in map(parse_override, overrides):
        node = doc
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    tmp = path.with_suffix(".yaml.tmp")
    with tmp.open("w") as fh:
        yaml.dump(doc, fh)
    os.replace(tmp, path)


def smoke_workspace(root: Path, overrides: list[str]) -> Path:
    """A scratch DVC project under .genops/smoke with the `smoke:` sizes; the real registry is untouched."""
    import yaml

    from genops.config import apply_overrides, load_params, smoke_params

    params = apply_overrides(smoke_params(load_params(root)), overrides)
    source = str(params["data"]["source"])
    if not Path(source).is_absolute() and (root / source).exists():
        params["data"]["source"] = str((root / source).resolve())
    ws = root / ".genops" / "smoke"
    ws.mkdir(parents=True, exist_ok=True)
    for item in ("src", "dvc.yaml"):
        target = ws / item
        if target.is_dir():
            shutil.rmtree(target)
        (shutil.copytree if (root / item).is_dir() else shutil.copy)(root / item, target)
    (ws / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if not (ws / ".dvc").is_dir():
        _dvc(ws, "init", "--no-scm", "--quiet")
        _dvc(ws, "config", "core.analytics", "false")
    return ws


def run_pipeline(root: Path, families: list[str] | None = None, smoke: bool = False,
                 overrides: list[str] | None = None) -> dict:
    """Entry point of `genops pipeline`: choose the workspace, then run the Prefect flow in flows/."""
    import importlib.util

    from genops.config import all_families, load_params

    overrides = list(overrides or [])
    known = all_families(load_params(root))
    unknown = [f for f in families or [] if f not in known]
    if unknown:
        raise GenopsError(f"--families {','.join(unknown)}: not in params.yaml `families` or `stacked` "
                          f"({', '.join(known)})")
    if smoke:
        workspace = smoke_workspace(root, overrides)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workspace / 'mlflow.db'}"
    else:
        workspace = root
        persist_overrides(root, overrides)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary API server can take longer than Prefect's 20 s default to start on a busy 2-core box.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    flow_file = root / "flows" / "pipeline.py"
    spec = importlib.util.spec_from_file_location("genops_flows_pipeline", flow_file)
    if spec is None or spec.loader is None:
        raise GenopsError(f"{flow_file} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from prefect.task_runners import ThreadPoolTaskRunner

    max_parallel = int(load_params(workspace).get("orchestration", {}).get("max_parallel", 1))
    flow_fn = module.genops_pipeline.with_options(task_runner=ThreadPoolTaskRunner(max_workers=max_parallel))
    return flow_fn(str(workspace), families=families)

"""DVC as genops drives it: one command runner (serialised: DVC holds a repo lock), remotes, lock hashes."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from dvc.repo import Repo
from filelock import FileLock

from genops.errors import GenopsError
from genops.executables import console_script

_THREAD_LOCK = threading.Lock()


@contextlib.contextmanager
def repo_lock(root: Path) -> Iterator[None]:
    """One DVC command at a time on a repository (DVC holds a repo lock and fails rather than waits), across
    threads and across processes (Dask workers on this host): a lock file under .genops."""
    path = Path(root) / ".genops" / "dvc-commands.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, FileLock(str(path)):
        yield


def dvc(root: Path, *args: str) -> str:
    return _checked(root, *args).stdout


def _checked(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`dvc ARGS` in `root`, its output captured; a failure raises with DVC's own message."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([dvc_exe(), *args], cwd=root, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise GenopsError(f"`dvc {' '.join(args)}` failed in {root}:\n{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def status(root: Path, *targets: str) -> dict:
    """`dvc status --json` (of these targets, else the whole pipeline) as DVC reports it: stage or output -> what
    changed; an empty dict means everything is up to date."""
    out = dvc(root, "status", "--json", *targets).strip()
    try:
        return json.loads(out or "{}")
    except json.JSONDecodeError:
        raise GenopsError(f"`dvc status --json` in {root} printed no JSON: {out[:500]}") from None


def dvc_exe() -> str:
    return console_script("dvc") or "dvc"


def remote_configured(root: Path) -> bool:
    """True when the project has a default DVC remote (e.g. the team stack's bucket, `genops stack connect`)."""
    proc = subprocess.run([dvc_exe(), "config", "core.remote"], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return proc.returncode == 0 and bool(proc.stdout.strip())


# Remote URL scheme -> (the plugin module DVC loads for it, the distribution that ships it). Local paths and
# http(s) need nothing beyond dvc itself.
REMOTE_PLUGINS = {"s3": ("dvc_s3", "dvc-s3"), "gs": ("dvc_gs", "dvc-gs"), "gcs": ("dvc_gs", "dvc-gs"),
                  "azure": ("dvc_azure", "dvc-azure"), "ssh": ("dvc_ssh", "dvc-ssh"),
                  "oss": ("dvc_oss", "dvc-oss"), "hdfs": ("dvc_hdfs", "dvc-hdfs"),
                  "webhdfs": ("dvc_webhdfs", "dvc-webhdfs"),
                  "webdav": ("dvc_webdav", "dvc-webdav"), "webdavs": ("dvc_webdav", "dvc-webdav"),
                  "gdrive": ("dvc_gdrive", "dvc-gdrive")}


def default_remote(root: Path) -> tuple[str, str] | None:
    """(name, url) of the project's default DVC remote, or None."""
    if not remote_configured(root):
        return None
    name = dvc(root, "config", "core.remote").strip()
    return name, dvc(root, "config", f"remote.{name}.url").strip()


def check_remote(root: Path) -> None:
    """Refuse, before any work, a default remote the run could not push to at its end: its DVC plugin missing
    (`requires 'dvc-s3' to be installed` would come only after training and registering), or an S3 remote with
    no credentials anywhere boto3 looks. The message says how to fix it."""
    remote = default_remote(root)
    if remote is None:
        return
    name, url = remote
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    module, dist = REMOTE_PLUGINS.get(scheme, (None, None))
    if module and importlib.util.find_spec(module) is None:
        extra = " (or `pip install -e '.[stack]'`)" if dist == "dvc-s3" else ""
        raise GenopsError(f"DVC remote {name!r} ({url}) needs the {dist} plugin, which is not installed: "
                          f"`pip install {dist}`{extra}, or remove the remote (`dvc remote remove {name}`); "
                          "nothing was trained")
    if scheme == "s3":
        import boto3

        if boto3.session.Session().get_credentials() is None and not _remote_has_keys(root, name):
            raise GenopsError(f"DVC remote {name!r} ({url}) has no S3 credentials: set AWS_ACCESS_KEY_ID / "
                              "AWS_SECRET_ACCESS_KEY (for the team stack: `source .genops/stack/stack.env`) or "
                              f"`dvc remote modify --local {name} access_key_id ...`; nothing was trained")


def _remote_has_keys(root: Path, name: str) -> bool:
    proc = subprocess.run([dvc_exe(), "config", f"remote.{name}.access_key_id"], cwd=root, capture_output=True,
                          text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return proc.returncode == 0 and bool(proc.stdout.strip())


def forget_transfer_index(root: Path) -> None:
    """Drop DVC's cached list of what a push or fetch should move, so the next one collects it afresh.

    DVC keeps that list in its data index under a key made of the data's hashes and commits it output by output;
    a `dvc push` killed while collecting leaves part of the list under the full key, and every later push of the
    same data takes the part for the whole: it reports success and the remote stays short (treeverse/dvc#10977;
    `benchmarks/faults.py`'s push kills found it). DVC drops the same index itself after each push that moved
    something; doing it first costs one re-collection (a walk of the outputs' hashes, no file reads)."""
    with Repo(str(root)) as repo:
        repo.drop_data_index()


@dataclass(frozen=True)
class PushResult:
    """What `dvc push` did, and the outputs dvc.lock records that the remote still lacks afterwards (outputs of
    runs made elsewhere, whose objects were never pushed: nobody can pull them from this remote)."""

    summary: str
    not_pushed: list[str]


def push_to_remote(root: Path) -> PushResult:
    """`dvc push --run-cache` to the default remote: everything this workspace has, even where dvc.lock also lists
    outputs it has not (pushing them is not possible from here); those are named in the result."""
    with repo_lock(root):
        forget_transfer_index(root)
        out = dvc(root, "push", "--run-cache")
        lacking = not_in_remote(root)
    return PushResult(" ".join(out.split()[-6:]) if out.strip() else "nothing to push", lacking)


def not_in_remote(root: Path, *targets: str) -> list[str]:
    """The outputs (of these stages and their upstream, else of the whole pipeline) the default remote lacks.

    `dvc status --cloud --json` names files as `new` (only in this cache) or `missing` (in no cache); a directory
    whose manifest is in no cache it reports only in a warning, by hash (`name: None, md5: ....dir`), which is
    mapped back to its output path through dvc.lock."""
    args = ["status", "--cloud", "--json", *(["--with-deps", *targets] if targets else [])]
    proc = _checked(root, *args)
    try:
        state = json.loads(proc.stdout.strip() or "{}")
    except json.JSONDecodeError:
        raise GenopsError(f"`dvc {' '.join(args)}` in {root} printed no JSON: {proc.stdout[:500]}") from None
    warned = set(re.findall(r"md5: ([0-9a-f]{32}(?:\.dir)?)", proc.stderr))
    by_hash = {digest: path for path, digest in out_hashes(root).items()}
    lacking = {name for name, what in state.items() if what in ("new", "missing")}
    return sorted(lacking | {by_hash.get(h, f"an object {h} (not in dvc.lock)") for h in warned})


# The stages that make a registered family's version: its weights, their evaluation and its exported graphs
# (dvc.yaml's foreach stages, `-stacked` for a family trained on another's registered model).
VERSION_STAGES = ("train", "evaluate", "export")


def version_stages(root: Path, family: str) -> list[str]:
    """The DVC stages of `family`'s version that dvc.lock at `root` records (their upstream comes with
    `--with-deps`: the prepared data, the evaluator, a stacked family's base)."""
    lock = root / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.is_file() else {}
    wanted = {f"{stage}{kind}@{family}" for stage in VERSION_STAGES for kind in ("", "-stacked")}
    return sorted(name for name in stages if name in wanted)


def out_hashes(root: Path) -> dict[str, str]:
    """Output path -> DVC hash (md5), from dvc.lock."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    # dvc.lock 2.0: `hash` names the algorithm (md5) and the value sits under that name; an output without one
    # (never recorded) gets no entry rather than the algorithm's name.
    hashes = {}
    for stage in stages.values():
        for out in stage.get("outs", []):
            value = out.get(out.get("hash", "md5"))
            if isinstance(value, str) and value:
                hashes[out["path"]] = value
    return hashes

"""Starting, checking and stopping the stack's services (real PostgreSQL, SeaweedFS, MLflow, Prefect).

Every service binds 127.0.0.1. Each runs in its own process group with its pid under `run/` and its log under
`logs/`, so `down` can stop exactly what `up` started. PostgreSQL refuses to run as root: on a root shell
(CI, containers) its commands run as the `postgres` system user, which then owns the data folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from genops.errors import GenopsError
from genops.executables import console_script
from genops.stack import zombies
from genops.stack.layout import (
    DB_USER,
    DVC_BUCKET,
    MLFLOW_BUCKET,
    WORK_POOL,
    Ports,
    Secrets,
    StackLayout,
    client_env,
    database_url,
)
from genops.storage.atomic import write_text_atomic

log = logging.getLogger(__name__)
PG_BINDIRS = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"), Path("/usr/local/pgsql/bin"))


def _bin(name: str) -> str:
    """A console script of this environment (mlflow, prefect, weed), else from PATH."""
    found = console_script(name)
    if not found:
        raise GenopsError(f"`{name}` not found: install the stack extra (pip install -e '.[stack]')")
    return found


def _pg(name: str) -> str:
    for folder in PG_BINDIRS:
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which(name)
    if not found:
        raise GenopsError(f"PostgreSQL's `{name}` not found (Debian: apt-get install postgresql-15)")
    return found


def _as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _own_by_pg(*paths: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in paths:
            os.chown(p, pw.pw_uid, pw.pw_gid)


def _run(cmd: list[str], env: dict | None = None, what: str = "") -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise GenopsError(f"{what or cmd[0]} failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return proc


def _base_env(layout: StackLayout) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "AWS_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PREFECT_HOME"] = str(layout.prefect_home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _spawn(layout: StackLayout, service: str, cmd: list[str], env: dict[str, str]) -> int:
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.run.mkdir(parents=True, exist_ok=True)
    with open(layout.log(service), "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=layout.root)
    _record(layout, service, proc.pid)
    return proc.pid


def _identity(pid: int) -> dict | None:
    """What names a process for good on Linux: the boot it runs in and its start time in clock ticks since that
    boot (/proc/<pid>/stat field 22), besides its pid. Wall-clock start times (psutil's create_time) are derived
    from the boot time, which moves whenever the clock is stepped (NTP, a VM restored from a snapshot): a pidfile
    compared by them failed on CI's VM. None if the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": the comm may hold spaces or parentheses
    state, start_ticks = fields[0], int(fields[19])
    if state in ("Z", "X"):
        return None
    return {"pid": pid, "boot_id": boot, "start_ticks": start_ticks}


def _record(layout: StackLayout, service: str, pid: int) -> None:
    """The pidfile names the process by more than its number (see `_identity`), so a pid the kernel has since
    given to another process (after a crash or a reboot) is never taken for the service. The command line is
    kept for people reading the file."""
    record = _identity(pid)
    if record is None:
        raise GenopsError(f"stack: {service} exited at once; see {layout.log(service)}")
    record["cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    write_text_atomic(layout.pidfile(service), json.dumps(record) + "\n")


def _owned(layout: StackLayout, service: str) -> int | None:
    """The service's pid if the pidfile names a live process that is the one this stack started (same boot, pid
    and start tick); else None, and a stale pidfile is removed."""
    path = layout.pidfile(service)
    try:
        record = json.loads(path.read_text())
        expected = {"pid": int(record["pid"]), "boot_id": str(record["boot_id"]),
                    "start_ticks": int(record["start_ticks"])}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("stack: %s names no process this stack can verify (an older or damaged pidfile); removed, "
                    "nothing signalled", path)
        path.unlink(missing_ok=True)
        return None
    if _identity(expected["pid"]) == expected:
        return expected["pid"]
    log.info("stack: %s is stale (process %d is gone or is another program); removed", path, expected["pid"])
    path.unlink(missing_ok=True)
    return None


def _wait(check, what: str, layout: StackLayout, service: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if service != "postgres" and _owned(layout, service) is None:
            last = "the process exited"
            break
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
        time.sleep(0.5)
    tail = layout.log(service).read_text(errors="replace")[-1500:] if layout.log(service).is_file() else ""
    raise GenopsError(f"{what} did not come up within {timeout:.0f} s ({last}); log {layout.log(service)}:\n{tail}")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def _pid(layout: StackLayout, service: str) -> int | None:
    path = layout.pidfile(service)
    if service == "postgres":
        path = layout.pg_data / "postmaster.pid"
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie child of this process counts as gone
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


# --- the services ---------------------------------------------------------------------------------------


def start_postgres(layout: StackLayout, ports: Ports, creds: Secrets) -> None:
    data, sock = layout.pg_data, layout.run / "pgsock"
    for folder in (layout.root, layout.run, layout.logs):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)  # the postgres user must reach its data, socket and log
    sock.mkdir(exist_ok=True)
    layout.log("postgres").touch()
    _own_by_pg(sock, layout.log("postgres"))
    if not (data / "PG_VERSION").is_file():
        data.mkdir(mode=0o700, exist_ok=True)
        _own_by_pg(data)
        pwfile = layout.run / "pg-superuser.pw"
        layout.write_private(pwfile, creds.pg_superuser + "\n")
        _own_by_pg(pwfile)
        try:
            _run(_as_pg_user([_pg("initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
                              "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions"]), what="initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        with open(data / "postgresql.conf", "a") as fh:
            fh.write(f"\n# genops stack\nlisten_addresses = '127.0.0.1'\nport = {ports.postgres}\n"
                     f"unix_socket_directories = '{sock}'\n")
    _run(_as_pg_user([_pg("pg_ctl"), "-D", str(data), "-l", str(layout.log("postgres")), "-w", "-t", "60",
                      "start"]), what="pg_ctl start")
    _ensure_databases(ports, creds)


def _ensure_databases(ports: Ports, creds: Secrets) -> None:
    """A password-authenticated role owning the mlflow and prefect databases (idempotent)."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=ports.postgres, user="postgres", password=creds.pg_superuser,
                            dbname="postgres")
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction (so no `with conn:`)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_USER,))
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE {DB_USER} LOGIN PASSWORD %s", (creds.pg_password,))
        for db in ("mlflow", "prefect"):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {db} OWNER {DB_USER}")
    conn.close()


def start_seaweedfs(layout: StackLayout, ports: Ports, creds: Secrets) -> None:
    layout.weed_data.mkdir(parents=True, exist_ok=True)
    config = layout.run / "s3-identities.json"
    layout.write_private(config, json.dumps({"identities": [{
        "name": "genops", "credentials": [{"accessKey": creds.s3_access_key, "secretKey": creds.s3_secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    w = ports.weed
    cmd = [_bin("weed"), "mini", f"-dir={layout.weed_data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
           f"-master.port={w[0]}", f"-master.port.grpc={w[1]}", f"-volume.port={w[2]}", f"-volume.port.grpc={w[3]}",
           f"-filer.port={w[4]}", f"-filer.port.grpc={w[5]}", f"-admin.port={w[6]}", f"-admin.port.grpc={w[7]}",
           f"-s3.port={ports.s3}", f"-s3.port.grpc={w[8]}", f"-s3.config={config}"]
    _spawn(layout, "seaweedfs", cmd, _base_env(layout))
    client = s3_client(ports, creds)

    def ready() -> bool:
        client.list_buckets()
        return True

    _wait(ready, "SeaweedFS S3", layout, "seaweedfs")
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in (MLFLOW_BUCKET, DVC_BUCKET):
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


def s3_client(ports: Ports, creds: Secrets):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{ports.s3}", aws_access_key_id=creds.s3_access_key,
                        aws_secret_access_key=creds.s3_secret_key, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=20))


def start_mlflow(layout: StackLayout, ports: Ports, creds: Secrets) -> None:
    env = _base_env(layout)
    env.update({"MLFLOW_BACKEND_STORE_URI": database_url(ports, creds, "mlflow", "psycopg2"),
                "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports.s3}",
                "AWS_ACCESS_KEY_ID": creds.s3_access_key, "AWS_SECRET_ACCESS_KEY": creds.s3_secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"})
    cmd = [_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(ports.mlflow), "--workers", "1",
           "--serve-artifacts", "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts"]
    _spawn(layout, "mlflow", cmd, env)
    _wait(lambda: _http_ok(f"http://127.0.0.1:{ports.mlflow}/health"), "MLflow server", layout, "mlflow", 120)


def start_prefect(layout: StackLayout, ports: Ports, creds: Secrets) -> None:
    env = _base_env(layout)
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url(ports, creds, "prefect", "asyncpg")
    # The UI's own idea of where the API is: without it the UI calls the default port 4200 and shows
    # "Can't connect to Server API" whenever the stack runs on other ports (--free-ports).
    env["PREFECT_SERVER_UI_API_URL"] = f"http://127.0.0.1:{ports.prefect}/api"
    cmd = [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(ports.prefect)]
    _spawn(layout, "prefect", cmd, env)
    _wait(lambda: _http_ok(f"http://127.0.0.1:{ports.prefect}/api/health"), "Prefect server", layout, "prefect", 120)
    pool_env = {**_base_env(layout), "PREFECT_API_URL": f"http://127.0.0.1:{ports.prefect}/api"}
    listed = _run([_bin("prefect"), "work-pool", "ls"], pool_env, "prefect work-pool ls").stdout
    if WORK_POOL not in listed:
        _run([_bin("prefect"), "work-pool", "create", WORK_POOL, "--type", "process"], pool_env,
             "prefect work-pool create")
    known = subprocess.run([_bin("prefect"), "automation", "inspect", zombies.AUTOMATION_NAME], capture_output=True,
                           text=True, env=pool_env)
    if known.returncode != 0:
        _run([_bin("prefect"), "automation", "create", "--from-json", zombies.automation_json()], pool_env,
             "prefect automation create (crash flow runs that stopped beating)")


def start_worker(layout: StackLayout, ports: Ports, creds: Secrets) -> None:
    """A process worker on the pool: it runs deployed flows with the client environment of the stack."""
    env = {**_base_env(layout), **client_env(ports, creds)}
    env["PREFECT_HOME"] = str(layout.root / "worker-home")
    env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(zombies.HEARTBEAT_S)  # its runs beat; see stack/zombies.py
    # The worker's own health check answers once it polls the pool; bound to loopback like every service.
    env.update({"PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
                "PREFECT_WORKER_WEBSERVER_PORT": str(ports.worker_health)})
    cmd = [_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process", "--with-healthcheck"]
    _spawn(layout, "worker", cmd, env)
    _wait(lambda: _http_ok(f"http://127.0.0.1:{ports.worker_health}/health"), "Prefect worker", layout, "worker", 60)


STARTERS = {"postgres": start_postgres, "seaweedfs": start_seaweedfs, "mlflow": start_mlflow,
            "prefect": start_prefect, "worker": start_worker}


def stop(layout: StackLayout, service: str, timeout: float = 20.0) -> bool:
    """Stop one service; True if something was running."""
    if service == "postgres":
        if not (layout.pg_data / "postmaster.pid").is_file():
            return False
        subprocess.run(_as_pg_user([_pg("pg_ctl"), "-D", str(layout.pg_data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, text=True)
        return True
    pid = _owned(layout, service)
    if pid is None:  # not running, or the pid now belongs to someone else: nothing is signalled
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)  # the service's own process group (it was started in a new session)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if not _alive(pid):
            break
    layout.pidfile(service).unlink(missing_ok=True)
    return True


def status(layout: StackLayout) -> dict[str, dict]:
    ports, _ = layout.load()
    health = {"mlflow": f"http://127.0.0.1:{ports.mlflow}/health",
              "prefect": f"http://127.0.0.1:{ports.prefect}/api/health",
              "worker": f"http://127.0.0.1:{ports.worker_health}/health"}
    out = {}
    for service in STARTERS:
        if service == "postgres":
            pid = _pid(layout, service)
            entry = {"pid": pid, "running": bool(pid and _alive(pid))}
        else:
            pid = _owned(layout, service)
            entry = {"pid": pid, "running": pid is not None}
        if service in health and entry["running"]:
            try:
                entry["healthy"] = _http_ok(health[service])
            except OSError:
                entry["healthy"] = False
        out[service] = entry
    return out

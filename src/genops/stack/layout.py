"""Where a stack keeps its state, and the facts about it that clients need (ports, URLs, credentials).

Secrets (database and S3 passwords) live only in files with 0600 permissions: `secrets.json` for the stack
itself and `stack.env`, which a user sources to point genops, mlflow, prefect and dvc at the stack. They are
handed to services through environment variables or 0600 config files, never on a command line (which any
local user can read in `ps`).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

SERVICES = ("postgres", "seaweedfs", "mlflow", "prefect", "worker")
MLFLOW_BUCKET = "genops-mlflow"
DVC_BUCKET = "genops-dvc"
WORK_POOL = "genops"
DB_USER = "genops"


@dataclass
class Ports:
    postgres: int = 55432
    mlflow: int = 5000
    prefect: int = 4200
    s3: int = 8333
    worker_health: int = 4281  # the Prefect worker's own health check (`prefect worker start --with-healthcheck`)
    # SeaweedFS's internal servers (master, volume, filer, admin, each with a gRPC port).
    weed: list[int] = field(default_factory=lambda: list(range(19333, 19343)))

    @classmethod
    def free(cls) -> Ports:
        """Ports the OS says are free now (for tests and for hosts where the defaults are taken)."""
        socks = []
        for _ in range(15):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        numbers = [s.getsockname()[1] for s in socks]
        for s in socks:
            s.close()
        return cls(postgres=numbers[0], mlflow=numbers[1], prefect=numbers[2], s3=numbers[3],
                   worker_health=numbers[4], weed=numbers[5:])


@dataclass
class Secrets:
    pg_superuser: str
    pg_password: str
    s3_access_key: str
    s3_secret_key: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(pg_superuser=secrets.token_urlsafe(24), pg_password=secrets.token_urlsafe(24),
                   s3_access_key="GENOPS" + secrets.token_hex(8).upper(), s3_secret_key=secrets.token_urlsafe(30))


@dataclass(frozen=True)
class StackLayout:
    root: Path

    @property
    def pg_data(self) -> Path:
        return self.root / "postgres"

    @property
    def weed_data(self) -> Path:
        return self.root / "seaweedfs"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect-home"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """pid files and sockets."""
        return self.root / "run"

    @property
    def env_file(self) -> Path:
        return self.root / "stack.env"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def pidfile(self, service: str) -> Path:
        return self.run / f"{service}.pid"

    def write_private(self, path: Path, text: str) -> None:
        """Create `path` readable by its owner only, before any secret is written into it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(path, 0o600)

    # --- persisted facts --------------------------------------------------------------------------------
    def save(self, ports: Ports, creds: Secrets) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "stack.json").write_text(json.dumps({"ports": asdict(ports)}, indent=2) + "\n")
        self.write_private(self.root / "secrets.json", json.dumps(asdict(creds), indent=2) + "\n")

    def load(self) -> tuple[Ports, Secrets]:
        ports = Ports(**json.loads((self.root / "stack.json").read_text())["ports"])
        return ports, Secrets(**json.loads((self.root / "secrets.json").read_text()))

    def exists(self) -> bool:
        return (self.root / "stack.json").is_file() and (self.root / "secrets.json").is_file()


def client_env(ports: Ports, creds: Secrets) -> dict[str, str]:
    """What clients of the stack need. MLflow clients need only the tracking URI (artifacts go through the
    server); the S3 credentials are for DVC's remote."""
    return {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports.mlflow}",
        "PREFECT_API_URL": f"http://127.0.0.1:{ports.prefect}/api",
        "GENOPS_S3_ENDPOINT": f"http://127.0.0.1:{ports.s3}",
        "GENOPS_DVC_REMOTE_URL": f"s3://{DVC_BUCKET}/cache",
        "AWS_ACCESS_KEY_ID": creds.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": creds.s3_secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def database_url(ports: Ports, creds: Secrets, db: str, driver: str) -> str:
    return f"postgresql+{driver}://{DB_USER}:{creds.pg_password}@127.0.0.1:{ports.postgres}/{db}"

"""Start the real server as a subprocess on a free port, on SQLite or a fresh PostgreSQL database."""

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml

POSTGRES_ENV = "HS_TEST_POSTGRES"  # e.g. postgresql://postgres@127.0.0.1:5432/postgres
BACKENDS = ["sqlite", "postgres"]

# Rate limits a test suite never hits unless a test lowers them on purpose.
RELAXED = {"per_second": 1000, "burst_count": 1000}
TEST_CONFIG: dict[str, Any] = {
    "server_name": "localhost",
    "enable_registration": True,
    "bcrypt_rounds": 4,
    "rc_login": {"address": RELAXED, "account": RELAXED, "failed_attempts": RELAXED},
    "rc_registration": RELAXED,
    # Test push gateways listen on loopback, which the default ip_range_blacklist covers.
    "ip_range_whitelist": ["127.0.0.1/32"],
}


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def database_config(backend: str, directory: Path) -> Iterator[dict[str, Any]]:
    """A `database` config section for `backend`: a file in `directory`, or a new PostgreSQL
    database that is dropped afterwards."""
    if backend == "sqlite":
        yield {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}}
        return
    from sqlalchemy_utils import create_database, drop_database

    base = postgres_url()
    assert base, f"{POSTGRES_ENV} is not set"
    url = base.rsplit("/", 1)[0] + f"/hs_test_{uuid.uuid4().hex[:12]}"
    admin_url = url.replace("postgresql://", "postgresql+psycopg2://", 1)  # SQLAlchemy 2.1 defaults to psycopg 3
    create_database(admin_url)
    try:
        yield {"name": "psycopg2", "args": {"dsn": url, "cp_max": 5}}
    finally:
        _disconnect_everyone(base, url.rsplit("/", 1)[1])
        drop_database(admin_url)


def _disconnect_everyone(base_url: str, dbname: str) -> None:
    """End leftover sessions (a killed server, an unclosed pool) so the database can be dropped."""
    import psycopg2

    conn = psycopg2.connect(base_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
    conn.close()


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class ServerProcess:
    """`homeserver run -c <generated config>` in a subprocess; `url` once it answers /health."""

    def __init__(
        self,
        directory: Path,
        database: dict[str, Any],
        overrides: dict[str, Any] | None = None,
        fd_limit: int | None = None,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        config = merge(
            TEST_CONFIG,
            {
                "signing_key_path": str(directory / "signing.key"),
                "database": database,
                "listeners": [
                    {"port": self.port, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]}
                ],
            },
        )
        self.config = merge(config, overrides or {})
        self.config_path = directory / "homeserver.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = directory / "server.log"
        self.fd_limit = fd_limit
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        limit = self.fd_limit

        def lower_fd_limit() -> None:
            if limit is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "homeserver", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lower_fd_limit,
            env={k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def open_fds(self) -> int:
        assert self.process
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

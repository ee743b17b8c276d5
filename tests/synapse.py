"""A real Synapse as a federation peer on loopback, installed from PyPI into a virtualenv of its own.

The virtualenv lives outside the project's environment: HS_TEST_SYNAPSE_VENV, or
~/.cache/homeserver-tests/synapse-venv. It is created on first use (under a file lock, so parallel test
sessions build it once) and reused afterwards."""

import fcntl
import hashlib
import hmac
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from signedjson.key import generate_signing_key, write_signing_keys

from tests.client import PASSWORD, RoomClient
from tests.federation_servers import self_signed_cert
from tests.server import free_port

SYNAPSE_VERSION = "1.163.2"
VENV_ENV = "HS_TEST_SYNAPSE_VENV"
DEFAULT_VENV = Path.home() / ".cache" / "homeserver-tests" / "synapse-venv"
INSTALL_TIMEOUT = 600.0

# Limits a test never reaches. Synapse reads each of these sections as {per_second, burst_count}.
_RELAXED = {"per_second": 10000, "burst_count": 10000}
_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _RELAXED,
    "rc_registration": _RELAXED,
    "rc_login": {"address": _RELAXED, "account": _RELAXED, "failed_attempts": _RELAXED},
    "rc_joins": {"local": _RELAXED, "remote": _RELAXED},
    "rc_joins_per_room": _RELAXED,
    "rc_invites": {"per_room": _RELAXED, "per_user": _RELAXED, "per_issuer": _RELAXED},
    "rc_admin_redaction": _RELAXED,
    "rc_room_creation": _RELAXED,
    "rc_presence": {"per_user": _RELAXED},
    "rc_key_requests": _RELAXED,
    "rc_profile": _RELAXED,
    "rc_federation": {
        "window_size": 1000,
        "sleep_limit": 10000,
        "sleep_delay": 0,
        "reject_limit": 10000,
        "concurrent": 100,
    },
}


def synapse_venv() -> Path:
    """A virtualenv with the pinned Synapse, created when absent. Skips the calling test only when
    there is no such virtualenv and the package index cannot be reached to build one."""
    venv = Path(os.environ.get(VENV_ENV) or DEFAULT_VENV)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be installing it right now
        if _installed_version(venv) == SYNAPSE_VERSION:
            return venv
        index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
        if not _reachable(f"{index.rstrip('/')}/matrix-synapse/"):
            pytest.skip(
                f"no matrix-synapse=={SYNAPSE_VERSION} virtualenv at {venv}, and {index} is unreachable to build one"
            )
        _install(venv)
        return venv


def _installed_version(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    # Importing the package (not just finding its metadata) proves a past install was not cut short.
    check = subprocess.run(
        [str(python), "-c", "import synapse.app.homeserver, synapse; print(synapse.__version__)"],
        capture_output=True,
        text=True,
    )
    return check.stdout.strip() if check.returncode == 0 else None


def _reachable(url: str) -> bool:
    try:
        return requests.get(url, timeout=15).status_code < 500
    except requests.RequestException:
        return False


def _install(venv: Path) -> None:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"matrix-synapse=={SYNAPSE_VERSION}"],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    if install.returncode != 0 or _installed_version(venv) != SYNAPSE_VERSION:
        raise RuntimeError(f"installing matrix-synapse=={SYNAPSE_VERSION} into {venv} failed:\n{install.stderr}")


class SynapseProcess:
    """Synapse named `127.0.0.1:FEDPORT`: federation over HTTPS (self-signed) on FEDPORT, the client API
    in plain HTTP at `url`. Its data stays in `directory` across stop() and start()."""

    def __init__(self, directory: Path, venv: Path) -> None:
        self.directory = directory
        self.venv = venv
        self.federation_port = free_port()
        self.client_port = free_port()
        self.server_name = f"127.0.0.1:{self.federation_port}"
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.federation_url = f"https://{self.server_name}"
        self.shared_secret = secrets.token_hex(16)
        self.cert_path, key_path = self_signed_cert(directory)
        signing_key_path = directory / "signing.key"
        with signing_key_path.open("w") as f:
            write_signing_keys(f, [generate_signing_key("a_" + secrets.token_hex(2))])
        self.config = self._config(key_path, signing_key_path)
        self.config_path = directory / "homeserver.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = directory / "synapse.log"
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None  # how long the last start() took

    def _config(self, tls_key_path: Path, signing_key_path: Path) -> dict[str, Any]:
        loopback = {"bind_addresses": ["127.0.0.1"], "type": "http", "x_forwarded": False}
        return {
            "server_name": self.server_name,
            "public_baseurl": self.url + "/",
            "pid_file": str(self.directory / "synapse.pid"),
            "listeners": [
                {**loopback, "port": self.federation_port, "tls": True, "resources": [{"names": ["federation"]}]},
                {**loopback, "port": self.client_port, "tls": False, "resources": [{"names": ["client"]}]},
            ],
            "tls_certificate_path": str(self.cert_path),
            "tls_private_key_path": str(tls_key_path),
            "database": {"name": "sqlite3", "args": {"database": str(self.directory / "homeserver.db")}},
            "media_store_path": str(self.directory / "media_store"),
            "signing_key_path": str(signing_key_path),
            "registration_shared_secret": self.shared_secret,
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "report_stats": False,
            "enable_metrics": False,
            # Loopback peers with self-signed certificates, reached directly: an IP-literal server name
            # is checked against ip_range_blacklist (a whitelist alone does not help), so loopback is left out.
            "federation_verify_certificates": False,
            "ip_range_blacklist": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"],
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            # Retry a peer that was down within seconds (the default first backoff is 10 minutes).
            # Durations in milliseconds.
            "federation": {
                "destination_min_retry_interval": 500,
                "destination_retry_multiplier": 1.5,
                "destination_max_retry_interval": 5000,
                "max_short_retry_delay": 500,
                "max_long_retry_delay": 2000,
            },
            "allow_public_rooms_over_federation": True,
            # Synapse answers a repeated identical /sync from a cache for 2 minutes by default, so a test
            # polling sync would keep seeing the first answer.
            "caches": {"sync_response_cache_duration": 0},
            # Synapse's default lets no one (admins included) publish a room to its directory.
            "room_list_publication_rules": [{"action": "allow"}],
            **_RATE_LIMITS,
        }

    def start(self, timeout: float = 120.0) -> "SynapseProcess":
        started = time.monotonic()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(self.venv / "bin" / "python"), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Synapse exited with {self.process.returncode}:\n{self.log()[-5000:]}")
            if self._answers(self.url + "/health") and self._answers(self.federation_url + "/health"):
                self.start_seconds = time.monotonic() - started
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Synapse did not answer within {timeout}s:\n{self.log()[-5000:]}")

    def _answers(self, url: str) -> bool:
        try:
            return requests.get(url, timeout=1, verify=str(self.cert_path)).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> "SynapseProcess":
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def register(self, username: str | None = None, admin: bool = False) -> RoomClient:
        """A new Synapse user, registered through the shared-secret admin API and logged in."""
        username = username or "syn_" + uuid.uuid4().hex[:10]
        path = self.url + "/_synapse/admin/v1/register"
        nonce = requests.get(path, timeout=30).json()["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        for part in (nonce, username, PASSWORD):
            mac.update(part.encode() + b"\x00")
        mac.update(b"admin" if admin else b"notadmin")
        body = {"nonce": nonce, "username": username, "password": PASSWORD, "admin": admin, "mac": mac.hexdigest()}
        response = requests.post(path, json=body, timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()
        client = RoomClient(self.url, answer["access_token"])
        client.user_id, client.device_id = answer["user_id"], answer.get("device_id")
        return client


@contextmanager
def running_synapse(directory: Path) -> Iterator[SynapseProcess]:
    """A started Synapse with its data in `directory`, stopped afterwards."""
    process = SynapseProcess(directory, synapse_venv()).start()
    try:
        yield process
    finally:
        process.stop()

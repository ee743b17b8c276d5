"""The `homeserver` command as an operator uses it: start-up errors, generate-config, admin."""

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.client import Client
from tests.server import ServerProcess, database_config, free_port


def homeserver(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    import os

    environment = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "homeserver", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, one line on stderr that says what is wrong, no traceback (log lines may come too)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("homeserver: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_config_file(tmp_path: Path) -> None:
    result = homeserver("run", "-c", str(tmp_path / "nope.yaml"))
    assert_clean_failure(result, "nope.yaml", "config file not found")


def test_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "hs.yaml"
    path.write_text("listeners:\n  - port: 8008\n    bind_adresses: ['::']\n")
    assert_clean_failure(homeserver("run", "-c", str(path)), str(path), "listeners[0].bind_adresses", "unknown option")


def test_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "hs.yaml"
    path.write_text("admission_control: {max_requests_in_flight: lots}\n")
    assert_clean_failure(homeserver("run", "-c", str(path)), "admission_control.max_requests_in_flight")


def test_unreadable_signing_key(tmp_path: Path) -> None:
    (tmp_path / "bad.key").write_text("this is not a key\n")
    path = tmp_path / "hs.yaml"
    path.write_text("signing_key_path: bad.key\n")
    assert_clean_failure(homeserver("run", "-c", str(path)), str(path), "signing_key_path", "not a valid signing key")


def test_unreachable_database(tmp_path: Path) -> None:
    path = tmp_path / "hs.yaml"
    port = free_port()  # nothing listens there
    path.write_text(f"database: {{name: psycopg2, args: {{dsn: 'postgresql://postgres@127.0.0.1:{port}/x'}}}}\n")
    assert_clean_failure(homeserver("run", "-c", str(path)), "cannot connect to PostgreSQL")


def test_bad_database_url(tmp_path: Path) -> None:
    path = tmp_path / "hs.yaml"
    path.write_text("database: {name: psycopg2, args: {dsn: 'postgres//nowhere'}}\n")
    assert_clean_failure(homeserver("run", "-c", str(path)), "database.args.dsn")


def test_database_newer_than_the_code_is_refused(backend: str, tmp_path: Path) -> None:
    with database_config(backend, tmp_path) as database:
        server = ServerProcess(tmp_path, database).start()
        server.stop()
        # Pretend a newer release has migrated this database.
        register = homeserver("admin", "list-users", "-c", str(server.config_path))
        assert register.returncode == 0, register.stderr
        _add_future_schema_version(database)
        result = homeserver("run", "-c", str(server.config_path))
        assert_clean_failure(result, "newer than this server knows")


def _add_future_schema_version(database: dict) -> None:
    if database["name"] == "sqlite3":
        import sqlite3

        conn = sqlite3.connect(database["args"]["database"])
    else:
        import psycopg2

        conn = psycopg2.connect(database["args"]["dsn"])
    cur = conn.cursor()
    cur.execute("INSERT INTO schema_version (version, name, applied_ts) VALUES (9999, 'future', 0)")
    conn.commit()
    conn.close()


def test_no_config_starts_on_the_embedded_default(tmp_path: Path) -> None:
    port = free_port()
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
    env["HOMESERVER_LISTENERS"] = f"[{{port: {port}}}]"  # the default port may be taken on a test machine
    with running(port, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT):
        assert requests.get(f"http://127.0.0.1:{port}/_matrix/client/versions").status_code == 200
        key = (tmp_path / "data" / "signing.key").read_text()
        assert key.startswith("ed25519 ")
        assert (tmp_path / "data" / "homeserver.db").exists()
    # The key is kept across restarts.
    with running(port, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        assert (tmp_path / "data" / "signing.key").read_text() == key


@contextmanager
def running(port: int, *args: str, **popen: Any) -> Iterator[None]:
    """`homeserver run *args` in the background, from when it answers on `port` until the block ends."""
    process = subprocess.Popen([sys.executable, "-m", "homeserver", "run", *args], **popen)
    try:
        _wait_for(f"http://127.0.0.1:{port}/health")
        yield
    finally:
        process.terminate()
        process.wait(10)


def _wait_for(url: str, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer")


def test_generate_config_writes_a_usable_config_and_key(tmp_path: Path) -> None:
    result = homeserver("generate-config", "--server-name", "chat.example.org", "--data-dir", "state", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "homeserver.yaml").read_text()
    assert text.startswith("# Homeserver configuration for chat.example.org")
    assert "# let anyone register an account" in text  # commented
    config = yaml.safe_load(text)
    assert config["server_name"] == "chat.example.org"
    assert config["registration_shared_secret"]
    assert (tmp_path / "state" / "chat.example.org.signing.key").read_text().startswith("ed25519 ")
    # It refuses to overwrite.
    again = homeserver("generate-config", "--server-name", "chat.example.org", cwd=tmp_path)
    assert_clean_failure(again, "already exists")


def test_generated_config_runs(tmp_path: Path) -> None:
    assert homeserver("generate-config", "--server-name", "localhost", cwd=tmp_path).returncode == 0
    port = free_port()
    config = tmp_path / "homeserver.yaml"
    text = config.read_text().replace("- port: 8008", f"- port: {port}")
    config.write_text(text)
    with running(port, "-c", str(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        pass
    assert (tmp_path / "data" / "homeserver.db").exists()


def test_generate_config_needs_a_valid_server_name(tmp_path: Path) -> None:
    assert_clean_failure(homeserver("generate-config", "--server-name", "not valid", cwd=tmp_path), "server name")
    assert_clean_failure(homeserver("generate-config", cwd=tmp_path), "--server-name")


@pytest.fixture
def admin_server(backend: str, tmp_path: Path):
    with database_config(backend, tmp_path) as database:
        server = ServerProcess(tmp_path, database, {"enable_registration": False})
        yield server
        server.stop()


def test_admin_register_user_then_login(admin_server: ServerProcess, tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("s3cret-enough\n")
    cfg = str(admin_server.config_path)
    result = homeserver("admin", "register-user", "carol", "--admin", "--password-file", str(password_file), "-c", cfg)
    assert result.returncode == 0, result.stderr
    assert "@carol:localhost" in result.stdout
    listing = homeserver("admin", "list-users", "-c", cfg)
    assert listing.returncode == 0
    assert "@carol:localhost" in listing.stdout and "yes" in listing.stdout
    admin_server.start()
    client = Client(admin_server.url)
    assert client.login("carol", "s3cret-enough").status_code == 200
    assert client.get("/_matrix/client/v3/account/whoami").json()["user_id"] == "@carol:localhost"


def test_admin_register_user_errors(admin_server: ServerProcess, tmp_path: Path) -> None:
    cfg = str(admin_server.config_path)
    password_file = tmp_path / "pw"
    password_file.write_text("pw\n")
    ok = homeserver("admin", "register-user", "@dave:localhost", "--password-file", str(password_file), "-c", cfg)
    assert ok.returncode == 0, ok.stderr
    taken = homeserver("admin", "register-user", "dave", "--password-file", str(password_file), "-c", cfg)
    assert_clean_failure(taken, "already taken")
    invalid = homeserver("admin", "register-user", "Dave!", "--password-file", str(password_file), "-c", cfg)
    assert_clean_failure(invalid, "may only contain")
    other = homeserver(
        "admin", "register-user", "@erin:elsewhere.org", "--password-file", str(password_file), "-c", cfg
    )
    assert_clean_failure(other, "not on this server")
    missing = homeserver("admin", "register-user", "erin", "--password-file", str(tmp_path / "none"), "-c", cfg)
    assert_clean_failure(missing, "--password-file")
    no_tty = homeserver("admin", "register-user", "erin", "-c", cfg)
    assert_clean_failure(no_tty, "use --password-file")


def test_admin_help() -> None:
    result = homeserver("admin", "register-user", "--help")
    assert result.returncode == 0
    assert "--password-file" in result.stdout


def test_admin_register_user_over_http_with_the_shared_secret(backend: str, tmp_path: Path) -> None:
    with database_config(backend, tmp_path) as database:
        server = ServerProcess(tmp_path, database, {"registration_shared_secret": "s3cr3t"}).start()
        try:
            password_file = tmp_path / "pw"
            password_file.write_text("pw-for-frank\n")
            cfg = str(server.config_path)
            register_frank = ["admin", "register-user", "frank", "--password-file", str(password_file), "-c", cfg]
            result = homeserver(*register_frank, "--url", server.url)
            assert result.returncode == 0, result.stderr
            assert Client(server.url).login("frank", "pw-for-frank").status_code == 200
            again = homeserver(*register_frank, "--url", server.url)
            assert_clean_failure(again, "User ID already taken")
        finally:
            server.stop()


def test_shared_secret_registration_rejects_a_bad_mac(server: ServerProcess) -> None:
    client = Client(server.url)
    # The module's server has no shared secret configured.
    assert client.get("/_homeserver/admin/v1/register").json()["errcode"] == "M_UNKNOWN"


def test_shared_secret_registration_checks_the_mac(backend: str, tmp_path: Path) -> None:
    from homeserver.handlers.shared_secret_registration import registration_mac

    with database_config(backend, tmp_path) as database:
        server = ServerProcess(tmp_path, database, {"registration_shared_secret": "s3cr3t"}).start()
        try:
            client = Client(server.url)
            nonce = client.get("/_synapse/admin/v1/register").json()["nonce"]
            wrong = registration_mac("not-the-secret", nonce, "gina", "pw", False)
            body = {"nonce": nonce, "username": "gina", "password": "pw", "mac": wrong}
            response = client.post("/_synapse/admin/v1/register", body)
            assert (response.status_code, response.json()["errcode"]) == (403, "M_FORBIDDEN")
            # A nonce is good for one attempt only.
            body["mac"] = registration_mac("s3cr3t", nonce, "gina", "pw", False)
            assert client.post("/_synapse/admin/v1/register", body).status_code == 400
            nonce = client.get("/_synapse/admin/v1/register").json()["nonce"]
            body.update(nonce=nonce, mac=registration_mac("s3cr3t", nonce, "gina", "pw", False))
            answer = client.post("/_synapse/admin/v1/register", body).json()
            assert answer["user_id"] == "@gina:localhost" and answer["access_token"]
        finally:
            server.stop()

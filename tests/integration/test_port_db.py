"""`homeserver admin port-db`: a server filled over HTTP on SQLite, ported to PostgreSQL in small batches,
serves the same users, rooms, messages and media afterwards and takes new writes; runs cut short (at a
chosen batch, or by kill -9) finish when run again with every table equal, row for row; bad sources and
targets are refused in one line and change nothing."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.client import RoomClient, ok, push_rule_path, quote
from tests.integration.test_admin_cli import messages_back
from tests.integration.test_cli import assert_clean_failure, homeserver
from tests.integration.test_keys import Device
from tests.integration.test_media import download, upload
from tests.server import ServerProcess, database_config, postgres_url

needs_postgres = pytest.mark.skipif(not postgres_url(), reason="HS_TEST_POSTGRES not set")
MEDIA = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
MESSAGES = [f"message {i}" for i in range(25)]


class Populated:
    """A stopped SQLite server and what was put into it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sqlite_path = directory / "homeserver.db"
        self.users: dict[str, RoomClient] = {}
        self.room_id = ""
        self.media_id = ""


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Populated]:
    directory = tmp_path_factory.mktemp("port-db")
    facts = Populated(directory)
    with database_config("sqlite", directory) as database:
        server = ServerProcess(directory, database).start()
        try:
            _populate(server, facts)
        finally:
            server.stop()
    yield facts


def _populate(server: ServerProcess, facts: Populated) -> None:
    for name in ("alice", "bob", "carol", "dave"):
        facts.users[name] = RoomClient(server.url).register(name)  # type: ignore[assignment]
    alice, bob, carol = facts.users["alice"], facts.users["bob"], facts.users["carol"]
    room = facts.room_id = alice.create_room(preset="public_chat", name="Moving day", invite=[carol.user_id])
    bob.join(room)
    alice.send_state(room, "m.room.topic", {"topic": "from SQLite to PostgreSQL"})
    for i, body in enumerate(MESSAGES):
        last = (alice if i % 2 else bob).send_text(room, body)
    ok(bob.post(f"/_matrix/client/v3/rooms/{quote(room)}/receipt/m.read/{quote(last)}", {}))
    facts.media_id = upload(alice, MEDIA, "image/png", "photo.png")
    rule = {"pattern": "cake", "actions": ["notify"]}
    ok(alice.put(push_rule_path("content", "cake"), rule))
    ok(alice.put(f"/_matrix/client/v3/user/{quote(alice.user_id or '')}/account_data/org.example.moving", {"day": 1}))
    device = Device(alice)
    device.upload(device_keys=device.device_keys(), one_time_keys=device.one_time_keys("a", "b", "c"))
    ok(alice.post(f"/_matrix/client/v3/user/{quote(alice.user_id or '')}/filter", {"room": {"timeline": {"limit": 5}}}))


def port(source: Path, dsn: str, *extra: str) -> subprocess.CompletedProcess:
    return homeserver("admin", "port-db", "--sqlite-database", str(source), "--postgres", dsn, *extra, timeout=120)


def dsn_of(section: dict[str, Any]) -> str:
    return section["args"]["dsn"]


def assert_same_rows(sqlite_path: Path, dsn: str) -> int:
    """Every table of the source equals the target's, row for row; returns how many rows there are."""
    source = sqlite3.connect(sqlite_path)
    target = psycopg2.connect(dsn)
    total = 0
    try:
        tables = [
            r[0]
            for r in source.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        ]
        for table in tables:
            if table == "schema_version":
                continue
            columns = [r[1] for r in source.execute(f'PRAGMA table_info("{table}")')]
            select = f"SELECT {', '.join(columns)} FROM {table}"
            ours = sorted(source.execute(select).fetchall(), key=repr)
            with target.cursor() as cursor:
                cursor.execute(select)
                theirs = sorted(cursor.fetchall(), key=repr)
            assert ours == theirs, table
            total += len(ours)
    finally:
        source.close()
        target.close()
    return total


def summary_counts(stdout: str) -> dict[str, tuple[int, int]]:
    """The table of counts port-db prints at the end."""
    lines = stdout.split("\ntable ", 1)[1].splitlines()[1:]
    return {
        parts[0]: (int(parts[1].replace(",", "")), int(parts[2].replace(",", "")))
        for parts in (line.split() for line in lines)
        if len(parts) == 3
    }


@needs_postgres
def test_a_ported_server_serves_its_users_rooms_and_media_and_takes_new_writes(
    populated: Populated, tmp_path: Path
) -> None:
    with database_config("postgres", tmp_path) as target:
        # A server that only started on the target (created the schema, wrote a pruner mark) leaves it usable.
        (tmp_path / "first-start").mkdir()
        ServerProcess(tmp_path / "first-start", target).start().stop()
        result = port(populated.sqlite_path, dsn_of(target), "--batch-size", "7")
        assert result.returncode == 0, result.stdout + result.stderr
        counts = summary_counts(result.stdout)
        assert counts["events"][0] > len(MESSAGES) and counts["events"][0] == counts["events"][1]
        assert counts["users"] == (4, 4) and counts["media"] == (1, 1)
        assert "rows/s" in result.stdout and "all " in result.stdout
        assert_same_rows(populated.sqlite_path, dsn_of(target))

        # The same directory: the same signing key and media store, now on PostgreSQL.
        server = ServerProcess(populated.directory, target).start()
        try:
            _check_ported(server, populated)
        finally:
            server.stop()


def _check_ported(server: ServerProcess, populated: Populated) -> None:
    room = populated.room_id
    old_alice = populated.users["alice"]
    old_alice.base_url = server.url
    assert ok(old_alice.get("/_matrix/client/v3/account/whoami"))["user_id"] == old_alice.user_id

    bob = RoomClient(server.url)
    assert bob.login("bob").status_code == 200
    sync = ok(bob.get("/_matrix/client/v3/sync"))
    timeline = sync["rooms"]["join"][room]["timeline"]["events"]
    assert timeline[-1]["content"]["body"] == MESSAGES[-1]
    assert messages_back(bob, room) == MESSAGES[::-1]
    state = ok(bob.room_get(room, "state/m.room.topic"))
    assert state == {"topic": "from SQLite to PostgreSQL"}
    carol = RoomClient(server.url)
    assert carol.login("carol").status_code == 200
    assert room in ok(carol.get("/_matrix/client/v3/sync"))["rooms"]["invite"]

    # New writes need the counters (stream orderings, state groups) past the copied ones.
    event_id = bob.send_text(room, "written on PostgreSQL")
    assert messages_back(bob, room)[0] == "written on PostgreSQL"
    assert ok(bob.room_get(room, f"event/{quote(event_id)}"))["content"]["body"] == "written on PostgreSQL"
    new_room = bob.create_room(name="after the move")
    assert ok(bob.room_get(new_room, "state/m.room.name")) == {"name": "after the move"}
    erin = RoomClient(server.url).register("erin")
    erin.join(room)

    alice = RoomClient(server.url)
    assert alice.login("alice").status_code == 200
    assert download(alice, populated.media_id).content == MEDIA
    assert ok(alice.get(push_rule_path("content", "cake")))["pattern"] == "cake"
    user = quote(alice.user_id or "")
    assert ok(alice.get(f"/_matrix/client/v3/user/{user}/account_data/org.example.moving")) == {"day": 1}
    keys = ok(bob.post("/_matrix/client/v3/keys/query", {"device_keys": {alice.user_id: []}}))
    assert keys["device_keys"][alice.user_id]
    assert RoomClient(server.url).login("alice", password="wrong").status_code == 403


@needs_postgres
def test_runs_stopped_at_a_batch_resume_to_exact_copies(populated: Populated, tmp_path: Path) -> None:
    with database_config("postgres", tmp_path) as target:
        dsn = dsn_of(target)
        first = port(populated.sqlite_path, dsn, "--batch-size", "3", "--stop-after-batches", "4")
        assert first.returncode == 130, first.stderr
        assert "run the same command again" in first.stderr
        second = port(populated.sqlite_path, dsn, "--batch-size", "3", "--stop-after-batches", "30")
        assert second.returncode == 130 and second.stdout.startswith("resuming"), second.stdout
        last = port(populated.sqlite_path, dsn, "--batch-size", "3")
        assert last.returncode == 0, last.stdout + last.stderr
        assert all(ours == theirs for ours, theirs in summary_counts(last.stdout).values())
        assert assert_same_rows(populated.sqlite_path, dsn) > 100

        again = port(populated.sqlite_path, dsn, "--batch-size", "3")
        assert again.returncode == 0 and "all " in again.stdout
        assert "rows/s" not in again.stdout  # nothing copied twice


@needs_postgres
def test_a_run_killed_mid_table_resumes_to_an_exact_copy(populated: Populated, tmp_path: Path) -> None:
    with database_config("postgres", tmp_path) as target:
        dsn = dsn_of(target)
        args = ["admin", "port-db", "--sqlite", str(populated.sqlite_path), "--postgres", dsn, "--batch-size", "1"]
        process = subprocess.Popen(
            [sys.executable, "-m", "homeserver", *args], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
        )
        assert process.stdout is not None
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                assert line, "port-db ended before printing progress"
                if "%" in line:
                    break
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT sum(copied), count(*) FILTER (WHERE done = 0) FROM port_db_progress")
            copied, unfinished = cursor.fetchone()
        assert copied > 0 and unfinished > 0

        resumed = port(populated.sqlite_path, dsn, "--batch-size", "5")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert resumed.stdout.startswith("resuming")
        assert_same_rows(populated.sqlite_path, dsn)


# -- refusals --------------------------------------------------------------------------------------


def copy_of(populated: Populated, tmp_path: Path) -> Path:
    path = tmp_path / "copy.db"
    with sqlite3.connect(populated.sqlite_path) as source, sqlite3.connect(path) as target:
        source.backup(target)
    return path


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    result = port(tmp_path / "nope.db", "postgresql://postgres@127.0.0.1:1/nothing")
    assert_clean_failure(result, "nope.db", "not found")


def test_an_unreachable_target_is_refused(populated: Populated) -> None:
    result = port(populated.sqlite_path, "postgresql://postgres@127.0.0.1:1/nothing")
    assert_clean_failure(result, "cannot connect to PostgreSQL at 127.0.0.1:1/nothing")


def test_a_source_of_another_schema_version_is_refused(populated: Populated, tmp_path: Path) -> None:
    older = copy_of(populated, tmp_path)
    with sqlite3.connect(older) as conn:
        conn.execute("DELETE FROM schema_version WHERE version = (SELECT max(version) FROM schema_version)")
    result = port(older, "postgresql://postgres@127.0.0.1:1/nothing")
    assert_clean_failure(result, "start this version of the server on the SQLite database once")
    with sqlite3.connect(older) as conn:
        conn.execute("INSERT INTO schema_version VALUES (998, 'older', 0), (999, 'future', 0)")
    assert_clean_failure(port(older, "postgresql://postgres@127.0.0.1:1/nothing"), "schema version 999", "newer")


def test_a_file_that_is_no_homeserver_database_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x INTEGER)").connection.close()
    assert_clean_failure(port(other, "postgresql://postgres@127.0.0.1:1/x"), "not a homeserver database")


def test_a_sqlite_target_config_and_a_zero_batch_size_are_refused(populated: Populated, tmp_path: Path) -> None:
    config = tmp_path / "homeserver.yaml"
    config.write_text("server_name: example.org\n")
    result = homeserver("admin", "port-db", "--sqlite-database", str(populated.sqlite_path), "-c", str(config))
    assert_clean_failure(result, "is sqlite3, not PostgreSQL")
    result = port(populated.sqlite_path, "postgresql://postgres@127.0.0.1:1/x", "--batch-size", "0")
    assert_clean_failure(result, "--batch-size")


@needs_postgres
def test_a_target_holding_a_servers_data_is_refused_and_left_alone(populated: Populated, tmp_path: Path) -> None:
    with database_config("postgres", tmp_path) as target:
        config = tmp_path / "postgres.yaml"
        config.write_text(f"server_name: localhost\ndatabase: {{name: psycopg2, args: {{dsn: '{dsn_of(target)}'}}}}\n")
        password = tmp_path / "password"
        password.write_text("secret-secret\n")
        made = homeserver("admin", "register-user", "zed", "--password-file", str(password), "-c", str(config))
        assert made.returncode == 0, made.stderr

        result = homeserver(
            "admin", "port-db", "--sqlite", str(populated.sqlite_path), "--postgres-config", str(config)
        )
        assert_clean_failure(result, "already holds a server's data", "users")
        with psycopg2.connect(dsn_of(target)) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT user_id FROM users")
            assert cursor.fetchall() == [("@zed:localhost",)]
            cursor.execute("SELECT to_regclass('port_db_progress')")
            assert cursor.fetchone() == (None,)

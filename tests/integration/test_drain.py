"""SIGTERM drains: long-polls are answered at once with a valid /sync, requests in flight finish, newcomers
are refused, the process exits 0; a second signal exits at once. Each test has a server of its own, since
it ends it."""

import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests

from tests.client import Client, ok, quote
from tests.integration.servers import extra_server
from tests.server import ServerProcess

SYNC = "/_matrix/client/v3/sync"
SHUTDOWN_TIMEOUT_S = 8.0


@pytest.fixture
def process(backend: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with extra_server(backend, tmp_path, {"admission_control": {"shutdown_timeout": SHUTDOWN_TIMEOUT_S}}) as p:
        yield p


def health(process: ServerProcess) -> dict[str, Any]:
    return requests.get(process.url + "/health", timeout=5).json()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def exit_code(process: ServerProcess, timeout: float) -> int:
    assert process.process
    return process.process.wait(timeout)


def refuses_connections(process: ServerProcess) -> bool:
    try:
        socket.create_connection(("127.0.0.1", process.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@contextmanager
def account_data_locked(process: ServerProcess) -> Iterator[None]:
    """Hold a lock on account_data from outside, so that a write to it stays in flight until released: a
    naturally slow request, without hooks in the server. SQLite's writers wait up to 10 s for it."""
    database = process.config["database"]
    if database["name"] == "sqlite3":
        conn: Any = sqlite3.connect(database["args"]["database"], isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
    else:
        conn = psycopg2.connect(database["args"]["dsn"])
        conn.cursor().execute("LOCK TABLE account_data IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def put_account_data(pool: ThreadPoolExecutor, user: Client, process: ServerProcess) -> "Future[requests.Response]":
    path = f"/_matrix/client/v3/user/{quote(user.user_id)}/account_data/org.example.drain"
    answer = pool.submit(user.put, path, {"slow": True})
    # Health counts itself as a request in flight: the write is in flight once it shows two.
    wait_for(lambda: health(process)["admission"]["requests_in_flight"] >= 2)
    return answer


def test_drain_ends_long_polls_with_valid_responses(process: ServerProcess) -> None:
    user = Client(process.url).register()
    since = ok(user.get(SYNC))["next_batch"]
    with ThreadPoolExecutor(1) as pool:
        long_poll = pool.submit(user.get, SYNC, params={"since": since, "timeout": 30000})
        wait_for(lambda: health(process)["sync"]["waiting"] >= 1)
        started = time.monotonic()
        assert process.process
        process.process.send_signal(signal.SIGTERM)
        response = long_poll.result(timeout=5)
    assert time.monotonic() - started < 3
    assert response.status_code == 200
    assert response.json()["next_batch"] == since  # nothing new: the same token, to reconnect with
    assert exit_code(process, SHUTDOWN_TIMEOUT_S) == 0
    assert refuses_connections(process)
    assert "drain started" in process.log() and "drain ended" in process.log()


def test_drain_lets_requests_in_flight_finish_and_refuses_newcomers(process: ServerProcess) -> None:
    user = Client(process.url).register()
    with ThreadPoolExecutor(1) as pool, account_data_locked(process):
        answer = put_account_data(pool, user, process)
        assert process.process
        process.process.send_signal(signal.SIGTERM)
        wait_for(lambda: refuses_connections(process), timeout=3)
        assert process.process.poll() is None  # still draining: the write is in flight
        time.sleep(0.5)
        assert process.process.poll() is None
    assert answer.result(timeout=5).status_code == 200
    assert exit_code(process, SHUTDOWN_TIMEOUT_S) == 0


def test_second_signal_exits_at_once(process: ServerProcess) -> None:
    user = Client(process.url).register()
    with ThreadPoolExecutor(1) as pool, account_data_locked(process):
        put_account_data(pool, user, process)
        assert process.process
        process.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "drain started" in process.log(), timeout=3)
        process.process.send_signal(signal.SIGTERM)
        assert exit_code(process, 2) == 128 + signal.SIGTERM
    assert "again while draining" in process.log()


def test_stuck_database_work_does_not_hold_the_exit(backend: str, tmp_path: Path) -> None:
    """A request stuck in the database past the deadline is cut off; the process still exits soon after."""
    with extra_server(backend, tmp_path, {"admission_control": {"shutdown_timeout": 0.5}}) as process:
        user = Client(process.url).register()
        with ThreadPoolExecutor(1) as pool, account_data_locked(process):
            answer = put_account_data(pool, user, process)
            assert process.process
            process.process.send_signal(signal.SIGTERM)
            assert exit_code(process, 5) == 1
            with pytest.raises(requests.ConnectionError):
                answer.result(timeout=5)
        assert "1 requests and 0 long-polls cut off" in process.log()
        assert "exiting anyway" in process.log()

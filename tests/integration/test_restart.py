"""Restarts that lose nothing: a new `homeserver run` takes over the listening socket of the running one under
steady traffic, and a server started by systemd socket activation serves the socket it was passed (and the
connections queued on it while no process served). A short version of scripts/restart_bench.py."""

import http.client
import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.client import RoomClient, ok, quote
from tests.integration.servers import extra_server
from tests.integration.test_drain import account_data_locked, put_account_data, wait_for
from tests.server import ServerProcess, free_port

HANDOVERS = 2


@pytest.fixture
def process(backend: str, tmp_path: Path) -> Iterator[ServerProcess]:
    with extra_server(backend, tmp_path) as p:
        yield p


class KeepAlive:
    """One keep-alive connection, as a client keeps it: a connection the server closed between requests (seen
    before sending) is replaced; any error once the request is sent, and any status but 200, is a failure."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.conn: http.client.HTTPConnection | None = None
        self.failures: list[str] = []
        self.answered = 0
        self.reconnects = 0

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        if self.conn is not None and select.select([self.conn.sock], [], [], 0)[0]:
            self.conn.close()
            self.conn = None
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                self.reconnects += 1
            data = json.dumps(body).encode() if body is not None else None
            self.conn.request(method, path, data, {"Authorization": f"Bearer {self.token}"})
            response = self.conn.getresponse()
            raw = response.read()
            if response.will_close:
                self.conn.close()
                self.conn = None
        except (OSError, http.client.HTTPException) as e:
            self.failures.append(f"{method} {path}: {e!r}")
            self.conn = None
            return None
        if response.status != 200:
            self.failures.append(f"{method} {path}: {response.status} {raw[:200]!r}")
            return None
        self.answered += 1
        return json.loads(raw)


def spawn(process: ServerProcess) -> subprocess.Popen:
    with process.log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "homeserver", "run", "-c", str(process.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def test_take_over_under_steady_traffic_loses_no_request(process: ServerProcess) -> None:
    owner = RoomClient(process.url).register()
    room = owner.create_room(preset="public_chat")
    stop = threading.Event()
    clients: list[KeepAlive] = []
    sent: list[str] = []

    def client() -> KeepAlive:
        user = RoomClient(process.url).register()
        user.join(room)
        clients.append(KeepAlive(process.port, user.access_token))
        return clients[-1]

    def whoami(c: KeepAlive) -> None:
        while not stop.is_set():
            c.request("GET", "/_matrix/client/v3/account/whoami")

    def send(c: KeepAlive) -> None:
        while not stop.is_set():
            txn = f"t{len(sent)}"
            if c.request("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/{txn}", {"body": txn}):
                sent.append(txn)
            time.sleep(0.02)

    def sync(c: KeepAlive) -> None:
        since = ok(
            requests.get(process.url + "/_matrix/client/v3/sync", headers={"Authorization": f"Bearer {c.token}"})
        )
        since = since["next_batch"]
        while not stop.is_set():
            answer = c.request("GET", f"/_matrix/client/v3/sync?since={since}&timeout=30000", timeout=40)
            since = answer["next_batch"] if answer else since

    loops = [(whoami, client()), (whoami, client()), (send, client()), (sync, client()), (sync, client())]
    threads = [threading.Thread(target=loop, args=(c,)) for loop, c in loops]
    for thread in threads:
        thread.start()
    try:
        for _ in range(HANDOVERS):
            time.sleep(1)
            assert process.process
            old, before = process.process, sum(c.answered for c in clients)
            process.process = spawn(process)
            assert old.wait(30) == 0
            assert process.process.poll() is None
            assert sum(c.answered for c in clients) > before  # the traffic went on during the hand-over
        time.sleep(1)
    finally:
        stop.set()
        process.stop()  # its drain answers the long-polls
        for thread in threads:
            thread.join(45)
    assert [f for c in clients for f in c.failures] == []
    assert sum(c.reconnects for c in clients) > len(clients)  # connections were closed by the old processes
    log = process.log()
    assert log.count("taking over from pid") == HANDOVERS
    assert log.count("serves now: draining") == HANDOVERS
    # Nothing was lost either: every message answered is in the room.
    restarted = spawn(process)
    process.process = restarted
    _wait_healthy(process.url)
    messages = ok(owner.get(f"/_matrix/client/v3/rooms/{quote(room)}/messages", params={"dir": "b", "limit": 1000}))
    bodies = {e["content"].get("body") for e in messages["chunk"] if e["type"] == "m.room.message"}
    assert set(sent) <= bodies


def test_a_successor_that_fails_to_start_leaves_the_old_server_serving(process: ServerProcess, tmp_path: Path) -> None:
    user = RoomClient(process.url).register()
    with socket.socket() as taken:  # a second listener's port is taken: the successor fails after adopting the first
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        extra = {"port": taken.getsockname()[1], "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]}
        broken = tmp_path / "broken.yaml"
        broken.write_text(yaml.safe_dump({**process.config, "listeners": [*process.config["listeners"], extra]}))
        result = subprocess.run(
            [sys.executable, "-m", "homeserver", "run", "-c", str(broken)], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 2
    assert "taking over from pid" in result.stderr and "Address already in use" in result.stderr
    assert process.process and process.process.poll() is None
    assert ok(user.get("/_matrix/client/v3/account/whoami"))["user_id"] == user.user_id
    old, process.process = process.process, spawn(process)  # and the next hand-over works
    assert old.wait(30) == 0
    assert ok(user.get("/_matrix/client/v3/account/whoami"))["user_id"] == user.user_id


def test_take_over_flag_refuses_without_a_running_server(process: ServerProcess) -> None:
    process.stop()
    result = subprocess.run(
        [sys.executable, "-m", "homeserver", "run", "-c", str(process.config_path), "--take-over"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--take-over: no server answers on" in result.stderr


def activated(process: ServerProcess, listening: socket.socket) -> subprocess.Popen:
    """`homeserver run` as systemd starts it: the socket is descriptor 3, LISTEN_PID is the server's own pid."""
    fd = listening.fileno()
    boot = (
        "import os, sys\n"
        f"if {fd} != 3:\n"
        f"    os.dup2({fd}, 3)\n"
        f"    os.close({fd})\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'homeserver', 'run', '-c', sys.argv[1]])\n"
    )
    with process.log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", boot, str(process.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(fd,),
        )


def listening_socket(port: int) -> socket.socket:
    skt = socket.socket()
    skt.bind(("127.0.0.1", port))
    skt.listen(128)
    return skt


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the server did not answer /health"
        time.sleep(0.1)


def test_socket_activation_serves_the_passed_socket_and_what_queued_on_it(process: ServerProcess) -> None:
    process.stop()
    with listening_socket(process.port) as skt:  # held by "systemd": a bind of its own would fail
        first = activated(process, skt)
        try:
            _wait_healthy(process.url)
            alice = RoomClient(process.url).register()
            first.terminate()
            assert first.wait(30) == 0
            # No process serves: a connection is queued by the kernel on systemd's socket, not refused.
            queued = socket.create_connection(("127.0.0.1", process.port), timeout=30)
            queued.sendall(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            second = activated(process, skt)
            try:
                answer = queued.makefile("rb").readline()
                assert answer.startswith(b"HTTP/1.1 200"), answer
                assert ok(alice.get("/_matrix/client/v3/account/whoami"))["user_id"] == alice.user_id
            finally:
                queued.close()
                second.terminate()
                assert second.wait(30) == 0
        finally:
            if first.poll() is None:
                first.kill()
    assert process.log().count("socket activation: adopting 1 listening sockets from systemd") == 2


def test_socket_activation_refuses_a_socket_no_listener_matches(process: ServerProcess) -> None:
    process.stop()
    with listening_socket(free_port()) as skt:
        server = activated(process, skt)
        assert server.wait(30) == 2
    assert "make ListenStream= in the .socket unit match" in process.log()


def keep_alive(process: ServerProcess, user: RoomClient) -> http.client.HTTPConnection:
    """A connection that has had one answer and stays open."""
    conn = http.client.HTTPConnection("127.0.0.1", process.port, timeout=10)
    whoami(conn, user)
    return conn


def whoami(conn: http.client.HTTPConnection, user: RoomClient) -> http.client.HTTPResponse:
    conn.request("GET", "/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {user.access_token}"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    return response


def test_draining_answers_keep_alive_requests_with_close_and_closes_idle_connections(process: ServerProcess) -> None:
    user, writer = RoomClient(process.url).register(), RoomClient(process.url).register()
    busy, idle = keep_alive(process, user), keep_alive(process, user)
    with ThreadPoolExecutor(1) as pool, account_data_locked(process):
        slow_write = put_account_data(pool, writer, process)  # keeps the drain going
        assert process.process
        process.process.terminate()
        wait_for(lambda: "drain started" in process.log(), timeout=5)
        assert whoami(busy, user).will_close  # answered, and told to go elsewhere for the next one
        assert select.select([idle.sock], [], [], 3)[0]  # closed while idle: a client sees it before sending
        assert idle.sock.recv(1) == b""  # an orderly close, not a reset
        assert process.process.poll() is None  # still draining: the write is in flight
    assert slow_write.result(timeout=10).status_code == 200
    assert process.process.wait(10) == 0

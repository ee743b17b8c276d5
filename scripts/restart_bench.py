#!/usr/bin/env python3
"""Restart the server under steady traffic and count what the clients lose (docs/restarts.md).

    .venv/bin/python scripts/restart_bench.py                          # SQLite, 5 hand-overs
    .venv/bin/python scripts/restart_bench.py --database postgres \\
        --postgres-url postgresql://postgres@127.0.0.1:5432/postgres   # a fresh database, dropped afterwards

It starts `python -m homeserver run` (this interpreter, so use the project's virtualenv), registers users,
and runs steady mixed traffic: clients calling whoami, clients sending messages into a shared room, and
clients long-polling /sync (timeout=30000), each over one keep-alive connection as real clients do. Then it
restarts the server RESTARTS times by --procedure (see Server): `handover` (default) and `activation` are
the two documented procedures, `stop-start` the restart they replace, for comparison.

A client reuses its connection unless the server closed it (a `Connection: close` answer, or the close of an
idle connection, seen before sending): then it reconnects, which is not a failure. A failure is a refused
connection, a connection error or reset after the request was sent, a timeout, or any answer other than
200. Printed per restart (from its beginning until it is done, plus SETTLE_S): requests overlapping it,
failures, and the worst latency of whoami and sends (a long-poll's latency is its wait); then the same for
the traffic between restarts, and in total.
"""

import argparse
import contextlib
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WHOAMI = "/_matrix/client/v3/account/whoami"
SYNC_TIMEOUT_MS = 30_000
REQUEST_TIMEOUT_S = 10.0
FAILURE_PAUSE_S = 0.1  # a client waits this long after a failure before its next request, as real ones do
SETTLE_S = 1.0  # requests this long after a restart is done still count towards it
RELAXED = {"per_second": 100_000, "burst_count": 100_000}


@dataclass
class Sample:
    kind: str  # whoami, send, sync
    started: float
    ended: float
    error: str | None  # None: a 200


@dataclass
class Samples:
    lock: threading.Lock = field(default_factory=threading.Lock)
    items: list[Sample] = field(default_factory=list)
    reconnects: int = 0

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.items.append(sample)


class KeepAliveClient:
    """One HTTP/1.1 connection, reused while the server keeps it open, as browsers and SDKs do."""

    def __init__(self, port: int, token: str, samples: Samples) -> None:
        self._port = port
        self._token = token
        self._samples = samples
        self._conn: http.client.HTTPConnection | None = None

    def _closed_by_server(self) -> bool:
        """An idle connection the server closed is readable (EOF): seen before sending, nothing was lost."""
        assert self._conn is not None and self._conn.sock is not None
        return bool(select.select([self._conn.sock], [], [], 0)[0])

    def request(self, kind: str, method: str, path: str, body: Any = None, timeout: float = REQUEST_TIMEOUT_S) -> Any:
        if self._conn is not None and self._closed_by_server():
            self._conn.close()
            self._conn = None
            self._samples.reconnects += 1
        started = time.monotonic()
        error = None
        answer: Any = None
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=timeout)
                self._conn.connect()
            assert self._conn.sock is not None
            self._conn.sock.settimeout(timeout)
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
            self._conn.request(method, path, body=data, headers=headers)
            response = self._conn.getresponse()
            raw = response.read()
            if response.status != 200:
                error = f"HTTP {response.status}: {raw[:200]!r}"
            else:
                answer = json.loads(raw)
            if response.will_close:
                self._conn.close()
                self._conn = None
                self._samples.reconnects += 1
        except (OSError, http.client.HTTPException) as e:
            error = f"{type(e).__name__}: {e}"
            if self._conn is not None:
                self._conn.close()
            self._conn = None
        self._samples.add(Sample(kind, started, time.monotonic(), error))
        if error:
            time.sleep(FAILURE_PAUSE_S)
        return answer


def http_json(port: int, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    conn.request(method, path, body=json.dumps(body).encode() if body is not None else None, headers=headers)
    response = conn.getresponse()
    data = json.loads(response.read())
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status} {data}")
    return data


def register(port: int, name: str) -> str:
    body = {"username": name, "password": "restart-bench", "auth": {"type": "m.login.dummy"}}
    return http_json(port, "POST", "/_matrix/client/v3/register", body)["access_token"]


# -- the server -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def database_section(kind: str, directory: Path, postgres_url: str | None):
    if kind == "sqlite":
        yield {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}}
        return
    import psycopg2

    if not postgres_url:
        raise SystemExit("--database postgres needs --postgres-url")
    name = f"restart_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield {"name": "psycopg2", "args": {"dsn": postgres_url.rsplit("/", 1)[0] + "/" + name, "cp_max": 5}}
    finally:
        cur = admin.cursor()
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


# systemd's part in socket activation: the socket is descriptor 3 and LISTEN_PID the server's own pid.
ACTIVATE = """import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.executable, [sys.executable, "-m", "homeserver", "run", "-c", sys.argv[2]])
"""


class Server:
    """`homeserver run` processes of one config, restarted by `procedure`:

    - handover: start a second process, which takes over; done when the old one has exited (0).
    - activation: as `systemctl restart` with homeserver.socket: this script holds the listening socket, like
      systemd; SIGTERM, wait for the exit, start the next process with the socket; done when it answers.
    - stop-start: the same without socket activation (homeserver-plain.service), for comparison.
    """

    def __init__(self, directory: Path, database: dict[str, Any], port: int, procedure: str) -> None:
        self.port = port
        self.procedure = procedure
        self.config = directory / "homeserver.yaml"
        self.log = directory / "server.log"
        config = {
            "server_name": "localhost",
            "enable_registration": True,
            "bcrypt_rounds": 4,
            "signing_key_path": str(directory / "signing.key"),
            "media": {"media_store_path": str(directory / "media")},
            "database": database,
            "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]}],
            "rc_registration": RELAXED,
        }
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.process: subprocess.Popen | None = None
        self.socket: socket.socket | None = None
        if procedure == "activation":
            self.socket = socket.socket()
            self.socket.bind(("127.0.0.1", port))
            self.socket.listen(4096)

    def spawn(self) -> subprocess.Popen:
        command = [sys.executable, "-m", "homeserver", "run", "-c", str(self.config)]
        fds: tuple[int, ...] = ()
        if self.socket is not None:
            fds = (self.socket.fileno(),)
            command = [sys.executable, "-c", ACTIVATE, str(fds[0]), str(self.config)]
        with self.log.open("ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, pass_fds=fds)

    def start(self) -> None:
        self.process = self.spawn()
        self.wait_healthy()

    def wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                http_json(self.port, "GET", "/health")
                return
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}; see {self.log}")
            time.sleep(0.01)
        raise SystemExit(f"the server did not start; see {self.log}")

    def restart(self) -> tuple[float, float]:
        """Restart by `procedure`; returns when it started and when it was done."""
        old = self.process
        assert old is not None
        started = time.monotonic()
        if self.procedure != "handover":
            old.send_signal(signal.SIGTERM)
            if old.wait(120) != 0:
                raise SystemExit(f"the old process exited with {old.returncode}; see {self.log}")
            self.start()
            return started, time.monotonic()
        self.process = new = self.spawn()
        deadline = started + 120
        while old.poll() is None and new.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        ended = time.monotonic()
        if old.poll() != 0 or new.poll() is not None:
            raise SystemExit(f"hand-over failed: old process {old.poll()}, new one {new.poll()}; see {self.log}")
        return started, ended

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


# -- traffic ----------------------------------------------------------------------------------------


def traffic(
    args: argparse.Namespace, server: Server, samples: Samples, stop: threading.Event
) -> list[threading.Thread]:
    port = server.port
    owner = register(port, "owner")
    room = http_json(port, "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, owner)["room_id"]
    threads = []

    def member(name: str) -> KeepAliveClient:
        token = register(port, name)
        http_json(port, "POST", f"/_matrix/client/v3/join/{room}", {}, token)
        return KeepAliveClient(port, token, samples)

    def whoami_loop(client: KeepAliveClient) -> None:
        while not stop.is_set():
            client.request("whoami", "GET", WHOAMI)
            time.sleep(args.pause)

    def send_loop(client: KeepAliveClient, name: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{name}-{n}"
            client.request("send", "PUT", path, {"msgtype": "m.text", "body": f"{name} {n}"})
            time.sleep(args.pause * 5)

    def sync_loop(client: KeepAliveClient) -> None:
        since = None
        while not stop.is_set():
            path = "/_matrix/client/v3/sync" + (f"?since={since}&timeout={SYNC_TIMEOUT_MS}" if since else "")
            answer = client.request("sync", "GET", path, timeout=SYNC_TIMEOUT_MS / 1000 + REQUEST_TIMEOUT_S)
            if answer:
                since = answer["next_batch"]

    for i in range(args.whoami):
        threads.append(threading.Thread(target=whoami_loop, args=(member(f"whoami{i}"),)))
    for i in range(args.senders):
        threads.append(threading.Thread(target=send_loop, args=(member(f"sender{i}"), f"sender{i}")))
    for i in range(args.syncers):
        threads.append(threading.Thread(target=sync_loop, args=(member(f"syncer{i}"),)))
    for thread in threads:
        thread.start()
    return threads


def report(samples: list[Sample], windows: list[tuple[float, float]], reconnects: int) -> bool:
    def summary(label: str, chosen: list[Sample]) -> int:
        failed = [s for s in chosen if s.error]
        short = [s.ended - s.started for s in chosen if s.kind != "sync"]
        worst = max(short, default=0.0) * 1000
        print(f"{label:<12} {len(chosen):>9} {len(failed):>7} {worst:>12.0f}")
        for s in failed[:5]:
            print(f"    {s.kind}: {s.error}")
        return len(failed)

    print(f"{'':<12} {'requests':>9} {'failed':>7} {'worst ms':>12}   (worst: whoami and sends)")
    for i, (start, end) in enumerate(windows, 1):
        chosen = [s for s in samples if s.ended >= start and s.started <= end + SETTLE_S]
        summary(f"restart {i}", chosen)
        print(f"    done {end - start:.2f}s after it began")
    summary("between", [s for s in samples if not any(s.ended >= a and s.started <= b + SETTLE_S for a, b in windows)])
    failures = summary("total", samples)
    print(f"connections the server closed between requests (reconnected, not failures): {reconnects}")
    return failures == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("HS_TEST_POSTGRES"))
    parser.add_argument("--procedure", choices=("handover", "activation", "stop-start"), default="handover")
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--between", type=float, default=5.0, help="seconds of steady traffic around each restart")
    parser.add_argument("--whoami", type=int, default=4, help="clients calling whoami")
    parser.add_argument("--senders", type=int, default=3, help="clients sending messages")
    parser.add_argument("--syncers", type=int, default=6, help="clients long-polling /sync")
    parser.add_argument("--pause", type=float, default=0.01, help="whoami clients' pause between requests (s)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="restart-bench-") as tmp,
        database_section(args.database, Path(tmp), args.postgres_url) as database,
    ):
        server = Server(Path(tmp), database, free_port(), args.procedure)
        server.start()
        samples = Samples()
        stop = threading.Event()
        threads: list[threading.Thread] = []
        windows = []
        try:
            threads = traffic(args, server, samples, stop)
            for _ in range(args.restarts):
                time.sleep(args.between)
                windows.append(server.restart())
            time.sleep(args.between)
        finally:
            stop.set()
            stopped = time.monotonic()
            server.stop()  # its drain answers the long-polls, so the clients see `stop` at once
            for thread in threads:
                thread.join(SYNC_TIMEOUT_MS / 1000 + REQUEST_TIMEOUT_S + 5)
        print(
            f"database: {args.database}; restarts by {args.procedure}; {args.whoami} whoami, {args.senders} senders, "
            f"{args.syncers} syncers"
        )
        ok = report([s for s in samples.items if s.started < stopped], windows, samples.reconnects)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

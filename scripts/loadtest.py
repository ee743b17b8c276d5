#!/usr/bin/env python3
"""Load tests for the homeserver, over plain HTTP on 127.0.0.1 (standard library only).

    .venv/bin/python scripts/loadtest.py admission --spawn-server    # a server under `ulimit -n 1024`, flooded
    .venv/bin/python scripts/loadtest.py admission --base-url http://127.0.0.1:8008 --server-pid 1234

(--spawn-server runs `python -m homeserver` with this interpreter, so use the project's virtualenv.)

Subcommands:
  admission   Thousands of clients hold connections open (silent sockets, slowly sent headers, slowly sent
              bodies) and reconnect whenever the server drops them, while a canary on fresh connections
              measures /versions and whoami, and the server's descriptors are sampled. See docs/benchmarks.md.

Every load loop here is bounded in time and in count, and stops by itself.
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERSIONS = "/_matrix/client/versions"
WHOAMI = "/_matrix/client/v3/account/whoami"
REGISTER = "/_matrix/client/v3/register"
EMFILE_PATTERN = re.compile(r"EMFILE|Too many open files")
FLOOD_KINDS = ("silent", "slow_headers", "slow_body", "long_poll")
SLOW_PROBE_S = 0.1
MAX_PROBES = 100_000  # every loop is bounded in count as well as in time
MAX_RECONNECTS = 100_000  # per flood client
RETRY_AFTER_MS = re.compile(rb'"retry_after_ms":\s*(\d+)')
RETRY_AFTER = re.compile(rb"\r\nRetry-After:\s*(\d+)", re.IGNORECASE)
RELAXED_LIMIT = {"per_second": 1000, "burst_count": 1000}

# -- the process itself -----------------------------------------------------------------------------


def raise_own_fd_limit() -> int:
    """Thousands of client sockets need more than the usual 1,024 descriptors: soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def machine_description() -> str:
    cores = os.cpu_count()
    try:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f"{mem_kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, AttributeError):
        memory = "unknown RAM"
    return f"{cores} cores, {memory}, Python {sys.version.split()[0]}, {os.uname().sysname} {os.uname().release}"


# -- the server under test --------------------------------------------------------------------------


@dataclass
class Target:
    host: str
    port: int
    pid: int | None = None  # for descriptor sampling (/proc/PID/fd)
    log_path: Path | None = None  # grepped for EMFILE when known
    fd_limit: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def parse_base_url(url: str) -> tuple[str, int]:
    match = re.fullmatch(r"http://([^/:]+)(?::(\d+))?/?", url)
    if not match:
        raise SystemExit(f"--base-url must look like http://127.0.0.1:8008, not {url!r}")
    return match.group(1), int(match.group(2) or 80)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_config(directory: Path, port: int, extra: dict[str, Any]) -> dict[str, Any]:
    """SQLite in `directory`, registration open, rate limits out of the way (the flood is about connections)."""
    config = {
        "server_name": "localhost",
        "enable_registration": True,
        "bcrypt_rounds": 4,
        "signing_key_path": str(directory / "signing.key"),
        "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]}],
        "rc_login": {"address": RELAXED_LIMIT, "account": RELAXED_LIMIT, "failed_attempts": RELAXED_LIMIT},
        "rc_registration": RELAXED_LIMIT,
    }
    return merge(config, extra)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` over `base`, section by section."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@contextlib.contextmanager
def spawned_server(fd_limit: int, extra_config: dict[str, Any], keep: bool) -> Iterator[Target]:
    """`homeserver run` in a subprocess whose RLIMIT_NOFILE is `fd_limit` (soft and hard, as `ulimit -n`)."""
    directory = Path(tempfile.mkdtemp(prefix="hs-loadtest-"))
    port = free_port()
    config_path = directory / "homeserver.yaml"
    config_path.write_text(json.dumps(server_config(directory, port, extra_config), indent=2))  # JSON is YAML
    log_path = directory / "server.log"

    def limit_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "homeserver", "run", "-c", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_fds,
            close_fds=True,
        )
    target = Target("127.0.0.1", port, process.pid, log_path, fd_limit)
    try:
        wait_until_up(target, process, timeout=30)
        yield target
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if keep:
            print(f"server files kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def wait_until_up(target: Target, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}; log: {target.log_path}")
        with contextlib.suppress(OSError):
            if http_json("GET", target.base_url + "/health", timeout=1)[0] == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"server did not answer /health within {timeout}s; log: {target.log_path}")


def http_json(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 10
) -> tuple[int, Any]:
    """One blocking JSON request (setup and reporting only, never under measurement)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def register_user(base_url: str, prefix: str = "canary_") -> str:
    """A fresh account's access token (the server must allow registration with the dummy stage)."""
    body = {
        "username": prefix + uuid.uuid4().hex[:8],
        "password": uuid.uuid4().hex,
        "auth": {"type": "m.login.dummy"},
    }
    status, answer = http_json("POST", base_url + REGISTER, body)
    if status != 200:
        raise SystemExit(f"could not register the canary user: {status} {answer}")
    return answer["access_token"]


def sync_accounts(base_url: str, count: int, workers: int = 8) -> tuple[tuple[str, str], ...]:
    """`count` fresh accounts for long-polling clients, each with the token of its initial sync."""

    def one(_: int) -> tuple[str, str]:
        token = register_user(base_url, prefix="longpoll_")
        status, answer = http_json("GET", base_url + "/_matrix/client/v3/sync?timeout=0", token=token, timeout=60)
        if status != 200:
            raise SystemExit(f"initial sync failed: {status} {answer}")
        return token, answer["next_batch"]

    with ThreadPoolExecutor(workers) as pool:
        return tuple(pool.map(one, range(count)))


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU (Linux PSI), in percent."""
    try:
        return float(re.search(r"some avg10=([\d.]+)", Path("/proc/pressure/cpu").read_text()).group(1))
    except (OSError, AttributeError):
        return None


def emfile_lines(log_path: Path | None) -> list[str]:
    if log_path is None or not log_path.exists():
        return []
    return [line for line in log_path.read_text(errors="replace").splitlines() if EMFILE_PATTERN.search(line)]


# -- one HTTP exchange on a fresh connection (the canary) ---------------------------------------------


@dataclass
class Probe:
    started: float  # time.monotonic(); comparable across processes on Linux
    path: str
    status: int  # 0: no HTTP answer (connect failure, reset, timeout)
    latency: float  # seconds, connect to last byte
    error: str = ""
    connected: float = 0.0  # seconds until the connection was established
    first_byte: float = 0.0  # seconds until the first byte of the answer


async def probe(host: str, port: int, path: str, token: str | None, timeout: float) -> Probe:
    """GET `path` on a new connection (Connection: close) and read the whole answer."""
    started = time.monotonic()
    writer = None
    connected = first_byte = 0.0
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            connected = time.monotonic() - started
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}Connection: close\r\n\r\n".encode())
            answer = await reader.read(1)
            first_byte = time.monotonic() - started
            answer += await reader.read(-1)  # the server closes after the answer
        status_line = answer.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) >= 2 and status_line[1].isdigit() else 0
        error = "" if status else "no answer"
        if status and status != 200:
            match = re.search(rb'"error":\s*"([^"]*)"', answer)
            error = match.group(1).decode(errors="replace") if match else ""
        return Probe(started, path, status, time.monotonic() - started, error, connected, first_byte)
    except (OSError, TimeoutError) as e:
        return Probe(started, path, 0, time.monotonic() - started, type(e).__name__, connected, first_byte)
    finally:
        if writer is not None:
            writer.close()


async def run_canary(
    target: Target, token: str, interval: float, until: Callable[[], bool], timeout: float
) -> list[Probe]:
    """Every `interval` seconds (on a fixed schedule, not waiting for slow answers) one probe, alternating
    /versions and whoami, until `until()` is true."""
    tasks: list[asyncio.Task[Probe]] = []
    start = time.monotonic()
    for n in range(MAX_PROBES):
        if until():
            break
        path, auth = (VERSIONS, None) if n % 2 == 0 else (WHOAMI, token)
        tasks.append(asyncio.create_task(probe(target.host, target.port, path, auth, timeout)))
        await asyncio.sleep(max(0.0, start + (n + 1) * interval - time.monotonic()))
    return list(await asyncio.gather(*tasks))


@dataclass
class Sample:
    at: float  # time.monotonic()
    fds: int
    cpu: float  # seconds of CPU the server has used so far


async def sample_server(pid: int | None, interval: float, until: Callable[[], bool]) -> list[Sample]:
    """The server's open descriptors and CPU time, every `interval` seconds."""
    samples: list[Sample] = []
    for _ in range(MAX_PROBES):
        if pid is None or until():
            break
        count, cpu = open_fds(pid), cpu_seconds(pid)
        if count is not None and cpu is not None:
            samples.append(Sample(time.monotonic(), count, cpu))
        await asyncio.sleep(interval)
    return samples


def cpu_share(samples: list[Sample], start: float, end: float) -> float | None:
    """Fraction of one core the server used between `start` and `end`."""
    inside = [s for s in samples if start <= s.at <= end]
    if len(inside) < 2 or inside[-1].at <= inside[0].at:
        return None
    return (inside[-1].cpu - inside[0].cpu) / (inside[-1].at - inside[0].at)


# -- the flood (in a child process, so its busy event loop does not delay the canary) ----------------


@dataclass
class FloodPlan:
    host: str
    port: int
    clients: int
    start_at: float  # time.monotonic()
    duration: float
    ramp: float  # clients start spread over this many seconds
    kinds: tuple[str, ...]  # assigned round-robin
    trickle_interval: float  # seconds between the bytes of a slow header or body
    retry_delay: float  # pause before reconnecting after the server dropped us without an answer
    honor_retry_after: bool  # after a 503/429 with Retry-After, wait that long (as Matrix clients must)
    connect_timeout: float
    sync_accounts: tuple[tuple[str, str], ...] = ()  # (access token, since) for long_poll clients, round-robin
    long_poll_timeout_ms: int = 30_000


@dataclass
class FloodStats:
    connections: int = 0  # established
    connect_failures: dict[str, int] = field(default_factory=dict)  # why -> count: refused, reset, timed out
    dropped: int = 0  # established, then closed or reset by the server
    answered: dict[str, int] = field(default_factory=dict)  # HTTP status the server sent before closing -> count
    bytes_trickled: int = 0
    long_polls_answered: int = 0  # long-polling /sync requests that ran to their timeout and got 200
    stopped_at: float = 0.0  # time.monotonic() once every flood socket is closed
    peak_open: int = 0
    cpu_share: float = 0.0  # of one core, used by the flood process while it ran


class Flood:
    """`clients` coroutines, each holding one connection open the way its kind does, reconnecting whenever the
    server drops it, until the plan's end."""

    def __init__(self, plan: FloodPlan) -> None:
        self.plan = plan
        self.stats = FloodStats()
        self.open = 0
        self.end = plan.start_at + plan.duration
        self._headers = f"Host: {plan.host}:{plan.port}\r\nUser-Agent: loadtest\r\n"
        self._since: dict[int, str] = {}  # long_poll client -> its latest sync token

    async def run(self) -> FloodStats:
        await asyncio.sleep(max(0.0, self.plan.start_at - time.monotonic()))
        kinds = self.plan.kinds
        workers = [self._client(kinds[i % len(kinds)], i) for i in range(self.plan.clients)]
        await asyncio.gather(*workers)
        self.stats.stopped_at = time.monotonic()
        return self.stats

    def _left(self) -> float:
        return self.end - time.monotonic()

    async def _client(self, kind: str, index: int) -> None:
        await asyncio.sleep(self.plan.ramp * index / max(1, self.plan.clients))
        behaviour = getattr(self, "_" + kind)
        for _ in range(MAX_RECONNECTS):
            if self._left() <= 0:
                break
            sock = await self._connect()
            if sock is None:
                await asyncio.sleep(min(self._left(), max(self.plan.retry_delay, 0.05)))
                continue
            self.open += 1
            self.stats.peak_open = max(self.stats.peak_open, self.open)
            retry_after = None
            try:
                retry_after = await behaviour(sock, index)
            except OSError:
                pass
            finally:
                self.open -= 1
                _abort(sock)
            if self._left() > 0:
                self.stats.dropped += 1
                wait = retry_after if retry_after is not None and self.plan.honor_retry_after else 0.0
                await asyncio.sleep(min(self._left(), max(wait, self.plan.retry_delay)))

    async def _connect(self) -> socket.socket | None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(max(0.01, min(self.plan.connect_timeout, self._left()))):
                await loop.sock_connect(sock, (self.plan.host, self.plan.port))
        except (OSError, TimeoutError) as e:
            _abort(sock)
            why = type(e).__name__
            self.stats.connect_failures[why] = self.stats.connect_failures.get(why, 0) + 1
            return None
        self.stats.connections += 1
        return sock

    async def _hold(self, sock: socket.socket, trickle: bytes | None) -> float | None:
        """Wait for the server to close (or answer), sending one byte of `trickle` every trickle_interval.
        Returns the Retry-After the server gave, in seconds, if it gave one."""
        loop = asyncio.get_running_loop()
        position = 0
        retry_after = None
        while self._left() > 0:
            wait = min(self._left(), self.plan.trickle_interval)
            try:
                async with asyncio.timeout(wait):
                    data = await loop.sock_recv(sock, 4096)
            except TimeoutError:
                if trickle is not None:
                    await loop.sock_sendall(sock, trickle[position % len(trickle) : position % len(trickle) + 1])
                    position += 1
                    self.stats.bytes_trickled += 1
                continue
            if data.startswith(b"HTTP/"):
                retry_after = self._count_answer(data, "")
            if not data:
                return retry_after
            # the server answered something (an error); it will close next, keep reading until it does
        return retry_after

    def _count_answer(self, answer: bytes, kind: str) -> float | None:
        """Count an answer by status (and kind); returns how long it asks the client to wait, in seconds: the
        body's retry_after_ms, as Matrix clients read it, else the Retry-After header."""
        status = answer.split(b" ", 2)[1].decode("ascii", "replace")
        key = f"{kind} {status}".strip()
        self.stats.answered[key] = self.stats.answered.get(key, 0) + 1
        match = RETRY_AFTER_MS.search(answer)
        if match:
            return int(match.group(1)) / 1000
        match = RETRY_AFTER.search(answer)
        return float(match.group(1)) if match else None

    async def _silent(self, sock: socket.socket, index: int) -> float | None:
        return await self._hold(sock, None)

    async def _slow_headers(self, sock: socket.socket, index: int) -> float | None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, f"GET {VERSIONS} HTTP/1.1\r\n{self._headers}".encode())
        return await self._hold(sock, b"X-Padding: " + b"a" * 64 + b"\r\n")

    async def _slow_body(self, sock: socket.socket, index: int) -> float | None:
        loop = asyncio.get_running_loop()
        body_length = 4096  # never completes at one byte per trickle_interval within the read timeout
        head = (
            f"POST /_matrix/client/v3/login HTTP/1.1\r\n{self._headers}"
            f"Content-Type: application/json\r\nContent-Length: {body_length}\r\n\r\n"
        )
        await loop.sock_sendall(sock, head.encode())
        return await self._hold(sock, b'{"type": "m.login.password", ' + b" " * 64)

    async def _long_poll(self, sock: socket.socket, index: int) -> float | None:
        """Long-poll /sync on a keep-alive connection, one request after the other, as a client waiting for
        messages does. Returns the Retry-After of a refusal, or None when the connection is closed."""
        loop = asyncio.get_running_loop()
        accounts = self.plan.sync_accounts
        token, first_since = accounts[index % len(accounts)]
        for _ in range(MAX_RECONNECTS):
            if self._left() <= 0:
                return None
            since = urllib.parse.quote(self._since.get(index, first_since))
            request = (
                f"GET /_matrix/client/v3/sync?since={since}&timeout={self.plan.long_poll_timeout_ms} HTTP/1.1\r\n"
                f"{self._headers}Authorization: Bearer {token}\r\n\r\n"
            )
            await loop.sock_sendall(sock, request.encode())
            try:
                async with asyncio.timeout(self._left()):
                    answer = await read_response(sock)
            except TimeoutError:
                return None  # the flood is over
            if answer is None:
                return None
            head, body = answer
            retry_after = self._count_answer(head + b"\r\n\r\n" + body, "long_poll")
            if not head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")):
                return retry_after
            self.stats.long_polls_answered += 1
            self._since[index] = json.loads(body)["next_batch"]
            if b"\r\nconnection: close" in head.lower():
                return None
        return None


async def read_response(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """One HTTP response with a Content-Length (head, body); None if the connection closes first."""
    loop = asyncio.get_running_loop()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            return None
        body += chunk
    return head, body


def _abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): no TIME_WAIT, so a long flood cannot use up local ports."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def flood_process(plan: FloodPlan, results: Any, niceness: int) -> None:
    raise_own_fd_limit()
    if niceness:
        os.nice(niceness)
    started = time.monotonic()
    stats = asyncio.run(Flood(plan).run())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats.cpu_share = round((usage.ru_utime + usage.ru_stime) / max(0.001, time.monotonic() - started), 3)
    results.put(asdict(stats))


# -- the admission scenario ----------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    probes: list[Probe]

    def summary(self) -> dict[str, Any]:
        latencies = [p.latency * 1000 for p in self.probes if p.status == 200]
        ok = len(latencies)
        statuses: dict[str, int] = {}
        for p in self.probes:
            key = str(p.status) if p.status else (p.error or "error")
            statuses[key] = statuses.get(key, 0) + 1
        return {
            "requests": len(self.probes),
            "ok": ok,
            "success_rate": round(ok / len(self.probes), 4) if self.probes else None,
            "statuses": statuses,
            **{f"p{q}_ms": _round(percentile(latencies, q)) for q in (50, 95, 99)},
            "max_ms": _round(max(latencies, default=None)),
            # what a user of the canary waited, failures included (a failure costs its whole wait)
            "p99_all_ms": _round(percentile([p.latency * 1000 for p in self.probes], 99)),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def recovery_time(probes: list[Probe], burst_end: float, threshold_ms: float, run_length: int) -> float | None:
    """Seconds from the end of the burst to the start of the first `run_length` consecutive canary probes that all
    got 200 and whose median latency is within `threshold_ms`; None if that never happened. (The median, not each
    probe, so that one scheduling hiccup of a busy machine does not count as the server still being slow.)"""
    after = sorted((p for p in probes if p.started >= burst_end), key=lambda p: p.started)
    for i in range(len(after) - run_length + 1):
        window = after[i : i + run_length]
        if all(p.status == 200 for p in window) and percentile([p.latency * 1000 for p in window], 50) <= threshold_ms:
            return max(0.0, window[0].started - burst_end)
    return None


def admission(args: argparse.Namespace) -> int:
    own_limit = raise_own_fd_limit()
    if own_limit < args.clients + 200:
        print(f"warning: this process may open only {own_limit} descriptors for {args.clients} clients")
    extra = json.loads(args.server_config) if args.server_config else {}
    if args.spawn_server:
        with spawned_server(args.fd_limit, extra, args.keep) as target:
            return run_admission(args, target)
    host, port = parse_base_url(args.base_url)
    target = Target(host, port, args.server_pid, Path(args.server_log) if args.server_log else None)
    if args.server_pid:
        with contextlib.suppress(OSError, ValueError):
            target.fd_limit = int(
                Path(f"/proc/{args.server_pid}/limits").read_text().split("Max open files")[1].split()[0]
            )
    return run_admission(args, target)


def run_admission(args: argparse.Namespace, target: Target) -> int:
    token = register_user(target.base_url)
    kinds = tuple(args.kinds.split(","))
    long_pollers = sum(1 for i in range(args.clients) if kinds[i % len(kinds)] == "long_poll")
    accounts: tuple[tuple[str, str], ...] = ()
    if long_pollers:
        count = min(long_pollers, args.sync_accounts or long_pollers)
        print(f"registering {count} accounts for {long_pollers} long-polling clients ...", flush=True)
        accounts = sync_accounts(target.base_url, count)
    load_before = os.getloadavg()
    pressure_before = cpu_pressure()
    start_at = time.monotonic() + args.idle + 1.0  # the flood process needs a moment to start
    plan = FloodPlan(
        host=target.host,
        port=target.port,
        clients=args.clients,
        start_at=start_at,
        duration=args.duration,
        ramp=args.ramp,
        kinds=kinds,
        trickle_interval=args.trickle_interval,
        retry_delay=args.retry_delay,
        honor_retry_after=not args.ignore_retry_after,
        connect_timeout=args.connect_timeout,
        sync_accounts=accounts,
        long_poll_timeout_ms=args.long_poll_timeout,
    )
    context = multiprocessing.get_context("fork")  # before this process starts an event loop
    results = context.Queue()
    flooder = context.Process(target=flood_process, args=(plan, results, args.flood_nice), daemon=True)
    flooder.start()
    try:
        probes, samples, flood = asyncio.run(measure(args, target, token, plan, results))
    finally:
        flooder.join(timeout=10)
        if flooder.is_alive():
            flooder.kill()
    report = build_report(args, target, plan, probes, samples, flood)
    report["load_average_before"] = [round(x, 2) for x in load_before]
    report["cpu_pressure_pct"] = {"before": pressure_before, "after": cpu_pressure()}
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["verdict"]["all_met"] else 1


async def measure(
    args: argparse.Namespace, target: Target, token: str, plan: FloodPlan, results: Any
) -> tuple[list[Probe], list[Sample], dict[str, Any]]:
    """Canary and fd sampler from before the flood until `args.after` seconds after it stopped."""
    loop = asyncio.get_running_loop()
    flood: dict[str, Any] = {}
    hard_stop = plan.start_at + plan.duration + args.after + 60  # bound even if the flood process never reports

    def done() -> bool:
        if time.monotonic() > hard_stop:
            return True
        return bool(flood) and time.monotonic() >= flood["stopped_at"] + args.after

    async def collect() -> None:
        wait = plan.start_at + plan.duration + 60 - time.monotonic()
        flood.update(await loop.run_in_executor(None, lambda: results.get(timeout=max(1.0, wait))))

    collector = asyncio.create_task(collect())
    canary = asyncio.create_task(run_canary(target, token, args.canary_interval, done, args.canary_timeout))
    sampler = asyncio.create_task(sample_server(target.pid, args.fd_interval, done))
    probes, samples = await asyncio.gather(canary, sampler)
    with contextlib.suppress(Exception):
        await collector
    return probes, samples, flood


def build_report(
    args: argparse.Namespace,
    target: Target,
    plan: FloodPlan,
    probes: list[Probe],
    samples: list[Sample],
    flood: dict[str, Any],
) -> dict[str, Any]:
    burst_start = plan.start_at
    burst_end = flood.get("stopped_at") or plan.start_at + plan.duration
    idle = Phase("idle before", [p for p in probes if p.started < burst_start])
    burst = Phase("burst", [p for p in probes if burst_start <= p.started < burst_end])
    after = Phase("after", [p for p in probes if p.started >= burst_end])
    idle_summary = idle.summary()
    idle_ok = [p.latency * 1000 for p in idle.probes if p.status == 200]
    threshold = 2 * (percentile(idle_ok, 50) or 0)
    recovery = recovery_time(probes, burst_end, threshold, args.recovery_run)
    all_fds = [s.fds for s in samples]
    status, health = (0, {})
    with contextlib.suppress(OSError, ValueError):
        status, health = http_json("GET", target.base_url + "/health", timeout=5)
    emfile = emfile_lines(target.log_path)
    burst_summary = burst.summary()
    slow = [p for p in burst.probes if p.latency > SLOW_PROBE_S]
    slow_cpu = [cpu_share(samples, p.started - 0.1, p.started + p.latency + 0.1) for p in slow]
    max_fds = max(all_fds, default=None)
    cpu_idle, cpu_burst = (
        cpu_share(samples, plan.start_at - args.idle, burst_start),
        cpu_share(samples, burst_start, burst_end),
    )
    verdict = {
        "canary_all_200": burst_summary["ok"] == burst_summary["requests"],
        "canary_p99_under_200ms": (burst_summary["p99_all_ms"] or 1e9) < 200,
        "recovery_under_1s": recovery is not None and recovery < 1.0,
        "fds_within_limit": max_fds is None or target.fd_limit is None or max_fds <= target.fd_limit,
        "no_emfile_in_log": not emfile,
    }
    verdict["all_met"] = all(verdict.values())
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine_description(),
        "server": {"url": target.base_url, "pid": target.pid, "fd_limit": target.fd_limit, "log": str(target.log_path)},
        "flood": {
            "clients": plan.clients,
            "kinds": list(plan.kinds),
            "duration_s": plan.duration,
            "measured_duration_s": round(burst_end - burst_start, 2),
            **flood,
        },
        "canary": {"idle_before": idle_summary, "burst": burst_summary, "after": after.summary()},
        "recovery": {
            "threshold_ms": round(threshold, 1),
            "run_length": args.recovery_run,
            "seconds": None if recovery is None else round(recovery, 3),
        },
        "fds": {
            "samples": len(all_fds),
            "max": max_fds,
            "limit": target.fd_limit,
            "budget": (health.get("admission") or {}).get("connection_budget") if status == 200 else None,
        },
        "slow_probes": {
            # canary probes slower than SLOW_PROBE_S during the flood, and how busy the server was meanwhile:
            # a server far from one core while the canary waited was itself waiting for a CPU
            "count": len(slow),
            "server_cpu_share_median": _round(percentile([c for c in slow_cpu if c is not None], 50)),
            "with_server_under_half_a_core": sum(1 for c in slow_cpu if c is not None and c < 0.5),
        },
        "server_cpu_share": {
            "idle_before": None if cpu_idle is None else round(cpu_idle, 3),
            "burst": None if cpu_burst is None else round(cpu_burst, 3),
        },
        "emfile_lines": emfile[:5],
        "emfile_count": len(emfile),
        "server_admission": health.get("admission") if status == 200 else None,
        "verdict": verdict,
        "timeline": {
            "probes": [
                [
                    round(p.started - burst_start, 3),
                    p.path,
                    p.status,
                    round(p.latency * 1000, 1),
                    round(p.connected * 1000, 1),
                    round(p.first_byte * 1000, 1),
                    p.error,
                ]
                for p in probes
            ],
            "server": [[round(s.at - burst_start, 3), s.fds, round(s.cpu, 2)] for s in samples],
        },
    }


def print_report(report: dict[str, Any]) -> None:
    flood = report["flood"]
    print(f"{report['date']}  {report['machine']}")
    print(
        f"load average before: {report.get('load_average_before')}, CPU pressure (PSI some avg10, %): "
        f"{report.get('cpu_pressure_pct')}"
    )
    print(f"command: {report['command']}")
    print(
        f"flood: {flood['clients']} clients ({', '.join(flood['kinds'])}) for {flood['measured_duration_s']} s: "
        f"{flood.get('connections', '?')} connections, {flood.get('dropped', '?')} dropped by the server, "
        f"{flood.get('connect_failures', '?')} connect failures, answers {flood.get('answered', {})}, "
        f"peak {flood.get('peak_open', '?')} open, {flood.get('long_polls_answered', 0)} long-polls ran their "
        f"course, flood process CPU {flood.get('cpu_share', '?')} of a core"
    )
    for name, phase in report["canary"].items():
        print(
            f"canary {name:12} {phase['ok']}/{phase['requests']} ok ({phase['statuses']})  "
            f"p50 {phase['p50_ms']} p95 {phase['p95_ms']} p99 {phase['p99_ms']} max {phase['max_ms']} ms "
            f"(p99 incl. failures {phase['p99_all_ms']} ms)"
        )
    recovery = report["recovery"]
    print(
        f"recovery: {recovery['seconds']} s (until {recovery['run_length']} consecutive probes answered 200 with a "
        f"median within {recovery['threshold_ms']} ms, twice the idle median)"
    )
    fds = report["fds"]
    print(f"server fds: max {fds['max']} of limit {fds['limit']} ({fds['samples']} samples)")
    cpu = report["server_cpu_share"]
    print(f"server CPU (share of one core): idle {cpu['idle_before']}, burst {cpu['burst']}")
    slow = report["slow_probes"]
    print(
        f"canary probes over {SLOW_PROBE_S * 1000:.0f} ms during the flood: {slow['count']}, "
        f"{slow['with_server_under_half_a_core']} of them while the server used under half a core "
        f"(median {slow['server_cpu_share_median']})"
    )
    print(f"EMFILE / 'Too many open files' lines in the server log: {report['emfile_count']}")
    admission_state = report["server_admission"] or {}
    print(f"server's own count of refusals: {admission_state.get('refused')}")
    print("targets: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in report["verdict"].items()))


# -- command line ------------------------------------------------------------------------------------------


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--spawn-server", action="store_true", help="start a homeserver (SQLite, temp dir) to test")
    where.add_argument("--base-url", help="a running server, e.g. http://127.0.0.1:8008 (127.0.0.1 only)")
    parser.add_argument("--server-pid", type=int, help="the running server's pid, to sample its descriptors")
    parser.add_argument("--server-log", help="the running server's log, to look for EMFILE")
    parser.add_argument("--fd-limit", type=int, default=1024, help="RLIMIT_NOFILE of a spawned server (default 1024)")
    parser.add_argument("--server-config", help="JSON object merged into a spawned server's config")
    parser.add_argument("--keep", action="store_true", help="keep a spawned server's directory (config, log, db)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    adm = sub.add_parser("admission", help="connection flood against admission control, measured by a canary")
    add_target_arguments(adm)
    adm.add_argument("--clients", type=int, default=3000, help="flood connections held at once (default 3000)")
    adm.add_argument("--duration", type=float, default=30, help="seconds the flood lasts (default 30)")
    adm.add_argument("--idle", type=float, default=10, help="seconds of canary before the flood (default 10)")
    adm.add_argument("--after", type=float, default=5, help="seconds of canary after the flood (default 5)")
    adm.add_argument("--ramp", type=float, default=1, help="flood clients start spread over this (default 1 s)")
    adm.add_argument(
        "--kinds",
        default=",".join(FLOOD_KINDS),
        help="flood client kinds, assigned round-robin: silent (connect, send nothing), slow_headers (request "
        "line, then one header byte every trickle interval), slow_body (POST /login, one body byte every trickle "
        "interval), long_poll (GET /sync?since=...&timeout=..., one after the other on a keep-alive connection)",
    )
    adm.add_argument(
        "--long-poll-timeout", type=int, default=30_000, help="timeout of the long-polling /sync, ms (30000)"
    )
    adm.add_argument("--sync-accounts", type=int, default=0, help="accounts for long_poll clients (default: one each)")
    adm.add_argument("--trickle-interval", type=float, default=1.0, help="seconds between trickled bytes")
    adm.add_argument(
        "--retry-delay", type=float, default=0.0, help="pause before a client dropped without an answer reconnects"
    )
    adm.add_argument(
        "--ignore-retry-after", action="store_true", help="hostile clients: reconnect at once even after a 503"
    )
    adm.add_argument("--connect-timeout", type=float, default=5.0, help="flood clients give up connecting after")
    adm.add_argument(
        "--flood-nice", type=int, default=0, help="niceness of the flood process (it shares the server's CPUs)"
    )
    adm.add_argument("--canary-interval", type=float, default=0.1, help="seconds between canary probes")
    adm.add_argument("--canary-timeout", type=float, default=10.0, help="a canary probe fails after this long")
    adm.add_argument("--fd-interval", type=float, default=0.1, help="seconds between descriptor samples")
    adm.add_argument("--recovery-run", type=int, default=5, help="consecutive good probes that mean recovered")
    adm.add_argument("--json", help="also write the report here")
    adm.set_defaults(run=admission)
    from loadtest_herd import add_parser as add_herd_parser  # scripts/loadtest_herd.py: the thundering herd

    add_herd_parser(sub)
    from loadtest_catchup import add_parser as add_catchup_parser  # scripts/loadtest_catchup.py: a million unread

    add_catchup_parser(sub)
    from loadtest_profile import add_parser as add_profile_parser  # scripts/loadtest_profile.py: before upgrades

    add_profile_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = set(getattr(args, "kinds", "").split(",")) - set(FLOOD_KINDS) - {""}
    if unknown:
        parser.error(f"unknown flood kinds {sorted(unknown)}; known: {', '.join(FLOOD_KINDS)}")
    if getattr(args, "base_url", None) and not args.base_url.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("this load test only talks to 127.0.0.1")  # a usage error: exit status 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

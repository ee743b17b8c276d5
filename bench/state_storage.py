#!/usr/bin/env python3
"""State storage after N users join one room and M messages are sent, on our server and on Synapse.

    # one command, both servers, fresh PostgreSQL databases (dropped afterwards):
    .venv/bin/python bench/state_storage.py --spawn both

    # against a server that is already running, then measure its database:
    .venv/bin/python bench/state_storage.py --base-url http://127.0.0.1:8008 \\
        --db-dsn postgresql://postgres@127.0.0.1:5432/homeserver --kind ours

The script talks only the client-server API, the same for both servers: register --users accounts
(m.login.dummy), the first creates a public room, the others join it, then --messages
m.room.message events are sent, round-robin over the users, at most --concurrency requests in flight.
It then reads row counts and pg_total_relation_size (table + indexes + TOAST) of each server's
state tables, plus its events table for context, and prints a markdown table.

Needs aiohttp, psycopg2 and pyyaml (all in the project's .venv). Synapse is run from its own
virtualenv (--synapse-python, default /work/synapse-venv/bin/python); it is never imported here.
"""

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg2
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLIENT = "/_matrix/client/v3"
HUGE_LIMIT = {"per_second": 100000, "burst_count": 100000}
RETRYABLE = {429, 502, 503, 504}

# (label, table) per server. "state" tables are summed into the total; "context" ones are shown apart
# (a context table the schema does not have yet is shown as "—").
TABLES = {
    "ours": {
        "state": [("state groups", "state_groups"), ("state entries", "state_group_entries")],
        "context": [("events", "events"), ("push actions", "event_push_actions")],
    },
    "synapse": {
        "state": [
            ("state groups", "state_groups"),
            ("state entries", "state_groups_state"),
            ("group edges", "state_group_edges"),
        ],
        "context": [
            ("events", "events"),
            ("event -> state group", "event_to_state_groups"),
            ("push actions", "event_push_actions"),
        ],
    },
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the client script --------------------------------------------------------------------------------


@dataclass
class Stats:
    retries: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class Client:
    """Client-API calls with retries on rate limiting / overload (429, 503, ...) and dropped connections."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, stats: Stats) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.stats = stats

    async def call(
        self, method: str, path: str, body: dict | None = None, token: str | None = None, ok: tuple = (200,)
    ) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for attempt in range(30):
            try:
                async with self.session.request(method, self.base + path, json=body, headers=headers) as resp:
                    text = await resp.text()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientConnectionError) as e:
                self.stats.retries += 1
                if attempt >= 5:
                    raise RuntimeError(f"{method} {path}: {e!r}") from e
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            try:
                answer = json.loads(text) if text else {}
            except ValueError:
                answer = {"raw": text[:500]}
            if status in ok:
                return status, answer
            if status in RETRYABLE:
                self.stats.retries += 1
                delay = answer.get("retry_after_ms") if isinstance(answer, dict) else None
                wait = delay / 1000 if delay else float(retry_after or 0.5)
                await asyncio.sleep(min(max(wait, 0.05), 10))
                continue
            raise RuntimeError(f"{method} {path} -> {status}: {text[:500]}")
        raise RuntimeError(f"{method} {path}: still refused after 30 attempts")

    async def register(self, username: str, password: str) -> str:
        body: dict[str, Any] = {"username": username, "password": password, "auth": {"type": "m.login.dummy"}}
        for _ in range(3):
            status, answer = await self.call("POST", f"{CLIENT}/register", body, ok=(200, 401))
            if status == 200:
                return answer["access_token"]
            # A server that wants the session of a user-interactive auth flow first: answer with it.
            body["auth"] = {"type": "m.login.dummy", "session": answer.get("session")}
        raise RuntimeError(f"registering {username} failed: {answer}")


async def bounded(concurrency: int, jobs: list, label: str) -> list:
    """Run the coroutines at most `concurrency` at a time, logging progress every 10%."""
    semaphore = asyncio.Semaphore(concurrency)
    done = 0
    step = max(1, len(jobs) // 10)

    async def one(job):
        nonlocal done
        async with semaphore:
            result = await job
        done += 1
        if done % step == 0 or done == len(jobs):
            log(f"{label}: {done}/{len(jobs)}")
        return result

    return await asyncio.gather(*(one(j) for j in jobs))


async def run_script(base_url: str, users: int, messages: int, concurrency: int, prefix: str) -> tuple[str, Stats]:
    """Register, create a public room, join everyone, send the messages. Returns the room id."""
    stats = Stats()
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = Client(session, base_url, stats)
        password = secrets.token_hex(12)

        start = time.monotonic()
        tokens = await bounded(
            concurrency, [client.register(f"{prefix}{i:05d}", password) for i in range(users)], "register"
        )
        stats.timings["register"] = time.monotonic() - start

        start = time.monotonic()
        _, created = await client.call(
            "POST",
            f"{CLIENT}/createRoom",
            {"preset": "public_chat", "visibility": "public", "name": "state storage benchmark"},
            token=tokens[0],
        )
        room_id = created["room_id"]
        quoted = urllib.parse.quote(room_id, safe="")
        await bounded(
            concurrency, [client.call("POST", f"{CLIENT}/join/{quoted}", {}, token=t) for t in tokens[1:]], "join"
        )
        stats.timings["createRoom + join"] = time.monotonic() - start

        start = time.monotonic()
        senders = itertools.cycle(tokens)
        sends = [
            client.call(
                "PUT",
                f"{CLIENT}/rooms/{quoted}/send/m.room.message/bench{n}",
                {"msgtype": "m.text", "body": f"message {n}"},
                token=next(senders),
            )
            for n in range(messages)
        ]
        await bounded(concurrency, sends, "send")
        stats.timings["send"] = time.monotonic() - start
    return room_id, stats


# -- measuring ----------------------------------------------------------------------------------------


def measure(dsn: str, kind: str) -> dict[str, tuple[int, int]]:
    """table -> (rows, bytes incl. indexes and TOAST)."""
    out = {}
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            for group in TABLES[kind].values():
                for _, table in group:
                    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
                    if cur.fetchone()[0]:
                        cur.execute(f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}")
                        out[table] = cur.fetchone()
    finally:
        conn.close()
    return out


def fmt_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):,.1f} MB"
    if n >= 1024:
        return f"{n / 1024:,.0f} kB"
    return f"{n} B"


def table_markdown(results: dict[str, dict[str, tuple[int, int]]]) -> str:
    """One column pair (rows, bytes) per server measured, and a Synapse/ours ratio when both are there."""
    kinds = [k for k in ("ours", "synapse") if k in results]
    both = len(kinds) == 2
    header = "| | " + " | ".join(f"{k}: table | {k}: rows | {k}: bytes" for k in kinds)
    header += " | ratio rows (Synapse/ours) | ratio bytes (Synapse/ours) |" if both else " |"
    lines = [header, "|" + "---|" * (1 + 3 * len(kinds) + (2 if both else 0))]

    def ratio(a: int, b: int) -> str:
        return f"{a / b:.1f}x" if b else "—"

    def row(label: str, cells: dict[str, tuple[str, int, int] | None]) -> None:
        parts = [label]
        for k in kinds:
            cell = cells.get(k)
            parts += [cell[0], f"{cell[1]:,}", fmt_bytes(cell[2])] if cell else ["—", "—", "—"]
        if both:
            o, s = cells.get("ours"), cells.get("synapse")
            parts += [ratio(s[1], o[1]), ratio(s[2], o[2])] if o and s else ["—", "—"]
        lines.append("| " + " | ".join(parts) + " |")

    labels = ["state groups", "state entries", "group edges"]
    for label in labels:
        cells = {}
        for k in kinds:
            table = dict(TABLES[k]["state"]).get(label)
            cells[k] = (f"`{table}`", *results[k][table]) if table else None
        row(label, cells)
    totals = {
        k: ("**all state tables**", *(sum(results[k][t][i] for _, t in TABLES[k]["state"]) for i in (0, 1)))
        for k in kinds
    }
    row("**total state storage**", totals)
    for label in ("events", "event -> state group", "push actions"):
        cells = {}
        for k in kinds:
            table = dict(TABLES[k]["context"]).get(label)
            if table in results[k]:
                cells[k] = (f"`{table}`", *results[k][table])
            elif label == "event -> state group" and k == "ours":
                cells[k] = ("(column `events.state_group`)", results[k]["events"][0], 0)
        row(f"{label} (context)", cells)
    return "\n".join(lines)


# -- spawning servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin_connect(pg_url: str):
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def fresh_database(pg_url: str, name: str, keep: bool) -> Iterator[str]:
    """CREATE DATABASE (UTF8, C collation, as Synapse requires) and drop it afterwards."""
    conn = admin_connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    finally:
        conn.close()
    try:
        yield pg_url.rsplit("/", 1)[0] + "/" + name
    finally:
        if keep:
            log(f"kept database {name}")
        else:
            conn = admin_connect(pg_url)
            try:
                with conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            finally:
                conn.close()


def wait_healthy(process: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log_path}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/health", timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server did not answer /health within {timeout}s; see {log_path}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ours_config(directory: Path, dsn: str, port: int) -> Path:
    config = {
        "server_name": "localhost",
        "signing_key_path": str(directory / "signing.key"),
        "database": {"name": "psycopg2", "args": {"dsn": dsn, "cp_max": 10}},
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]}],
        "enable_registration": True,
        "bcrypt_rounds": 4,
        "rc_login": {"address": HUGE_LIMIT, "account": HUGE_LIMIT, "failed_attempts": HUGE_LIMIT},
        "rc_registration": HUGE_LIMIT,
        "logging": {"level": "WARNING"},
    }
    path = directory / "homeserver.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def synapse_config(directory: Path, dsn: str, port: int, python: str) -> Path:
    """Synapse's own generated config, edited: PostgreSQL, one client listener, open registration,
    no throttling, no stats, no outside key servers."""
    path = directory / "homeserver.yaml"
    subprocess.run(
        [python, "-m", "synapse.app.homeserver", "--server-name", "localhost", "--config-path", str(path),
         "--data-directory", str(directory), "--generate-config", "--report-stats=no"],
        check=True, cwd=directory, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    config = yaml.safe_load(path.read_text())
    parsed = urllib.parse.urlparse(dsn)
    config.update(
        database={
            "name": "psycopg2",
            "args": {
                "user": parsed.username or "postgres",
                "host": parsed.hostname,
                "port": parsed.port or 5432,
                "database": parsed.path.lstrip("/"),
                "cp_min": 5,
                "cp_max": 10,
            },
        },
        listeners=[
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],  # fmt: skip
        enable_registration=True,
        enable_registration_without_verification=True,
        report_stats=False,
        trusted_key_servers=[],
        suppress_key_server_warning=True,
        bcrypt_rounds=4,
        rc_message=HUGE_LIMIT,
        rc_registration=HUGE_LIMIT,
        rc_registration_token_validity=HUGE_LIMIT,
        rc_login={"address": HUGE_LIMIT, "account": HUGE_LIMIT, "failed_attempts": HUGE_LIMIT},
        rc_joins={"local": HUGE_LIMIT, "remote": HUGE_LIMIT},
        rc_joins_per_room=HUGE_LIMIT,
        rc_invites={"per_room": HUGE_LIMIT, "per_user": HUGE_LIMIT, "per_issuer": HUGE_LIMIT},
        rc_room_creation=HUGE_LIMIT,
        rc_presence={"per_user": HUGE_LIMIT},
        rc_profile=HUGE_LIMIT,
        rc_user_directory=HUGE_LIMIT,
        rc_3pid_validation=HUGE_LIMIT,
        rc_admin_redaction=HUGE_LIMIT,
    )
    path.write_text(yaml.safe_dump(config))
    # The generated log config writes INFO lines for every request to homeserver.log: keep WARNING.
    log_config = Path(config["log_config"])
    logging_cfg = yaml.safe_load(log_config.read_text())
    logging_cfg.setdefault("root", {})["level"] = "WARNING"
    for logger in logging_cfg.get("loggers", {}).values():
        logger["level"] = "WARNING"
    log_config.write_text(yaml.safe_dump(logging_cfg))
    return path


def spawn_and_run(kind: str, args: argparse.Namespace) -> tuple[dict[str, tuple[int, int]], Stats]:
    db_name = f"bench_state_{kind}_{secrets.token_hex(4)}"
    directory = Path(tempfile.mkdtemp(prefix=f"bench-state-{kind}-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        with fresh_database(args.pg_url, db_name, args.keep) as dsn:
            if kind == "ours":
                config = ours_config(directory, dsn, port)
                command = [args.ours_python, "-m", "homeserver", "run", "-c", str(config)]
                env = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
                cwd = ROOT
            else:
                config = synapse_config(directory, dsn, port, args.synapse_python)
                command = [args.synapse_python, "-m", "synapse.app.homeserver", "-c", str(config)]
                env, cwd = dict(os.environ), directory
            log_path = directory / "stdout.log"
            log(f"{kind}: starting on {url}, database {db_name}, files in {directory}")
            with log_path.open("ab") as out:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
            try:
                wait_healthy(process, url, log_path, timeout=300)
                log(f"{kind}: up")
                _, stats = asyncio.run(run_script(url, args.users, args.messages, args.concurrency, "bench"))
                results = measure(dsn, kind)
            finally:
                stop(process)
            log(f"{kind}: stopped; " + ", ".join(f"{k} {v:.0f}s" for k, v in stats.timings.items()))
            return results, stats
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


def synapse_version(python: str) -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(
            [python, "-c", "import synapse; print(synapse.__version__)"], capture_output=True, text=True, check=True
        ).stdout.strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", help="a running server (not with --spawn)")
    parser.add_argument("--db-dsn", help="its PostgreSQL database, to measure afterwards (with --kind)")
    parser.add_argument("--kind", choices=("ours", "synapse"), help="which schema --db-dsn holds")
    parser.add_argument("--spawn", choices=("ours", "synapse", "both"), help="start the server(s) on fresh databases")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=20, help="requests in flight at most")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL admin URL for --spawn (databases are created beside it)")  # fmt: skip
    parser.add_argument("--ours-python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--synapse-python", default="/work/synapse-venv/bin/python")
    parser.add_argument("--keep", action="store_true", help="keep the databases and config folders of --spawn")
    args = parser.parse_args()
    if args.users < 1 or args.messages < 0:
        parser.error("--users must be at least 1 and --messages not negative")

    results: dict[str, dict[str, tuple[int, int]]] = {}
    all_stats: dict[str, Stats] = {}
    if args.spawn:
        kinds = ["ours", "synapse"] if args.spawn == "both" else [args.spawn]
        for kind in kinds:
            results[kind], all_stats[kind] = spawn_and_run(kind, args)
    else:
        if not args.base_url:
            parser.error("give --base-url (and --db-dsn with --kind to measure), or --spawn")
        prefix = f"bench{secrets.token_hex(3)}_"
        _, stats = asyncio.run(run_script(args.base_url, args.users, args.messages, args.concurrency, prefix))
        log("done; " + ", ".join(f"{k} {v:.0f}s" for k, v in stats.timings.items()))
        if args.db_dsn:
            if not args.kind:
                parser.error("--db-dsn needs --kind ours|synapse")
            results[args.kind], all_stats[args.kind] = measure(args.db_dsn, args.kind), stats

    print(f"\n{args.users:,} users joined one room, {args.messages:,} messages sent (concurrency {args.concurrency})")
    if "synapse" in results:
        print(f"Synapse {synapse_version(args.synapse_python)}")
    for kind, stats in all_stats.items():
        timing = ", ".join(f"{k} {v:.0f} s" for k, v in stats.timings.items())
        print(f"{kind}: {timing}; {stats.retries} retried requests")
    if results:
        print()
        print(table_markdown(results))


if __name__ == "__main__":
    main()

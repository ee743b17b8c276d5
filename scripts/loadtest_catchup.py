#!/usr/bin/env python3
"""Catching up on a million notifications (DESIGN.md, failure 2: "the long DELETE").

    .venv/bin/python scripts/loadtest.py catchup --spawn ours

A user comes back to --rooms rooms holding --actions unread push actions between them, and sends a read
receipt for the latest event of each, while --canaries clients keep sending and syncing. Our server is
spawned on a fresh PostgreSQL database with its default push settings (as `herd --spawn ours` does, from
bench/state_storage.py), and the database is dropped afterwards.

Seeding (fast, and with real event ids and stream orderings):
  1. over HTTP: register the reader, a sender and the canaries; the sender creates the rooms and the reader
     joins them; the canaries pair up in rooms of two;
  2. in the database: the events stream counter is moved on by --actions (`UPDATE stream_counters`), which
     reserves that many stream orderings no event will ever take;
  3. over HTTP: the sender sends --messages messages into each room, so the reader has real push actions
     and summaries (and the receipts point at real events, after the reserved range);
  4. in the database, one transaction: COPY --actions rows into event_push_actions for the reader, spread
     round-robin over the rooms, with the reserved stream orderings, each naming one of the real messages
     of its room (every 50th a highlight), then add them to the reader's push_summary counts; ANALYZE.
After that the reader's unread counts are what a sync shows; nothing of the server is bypassed after seeding.

The run: --idle seconds of canary traffic (the last two thirds are the idle baseline); the receipts (POST
/receipt m.read, one room after the other) and at once the reader's incremental sync; then until the
server's pruner has deleted the reader's read rows (GET /health, push_pruner.read_rows_deleted, every
250 ms), and --after seconds more. Each canary
sends a message into its room and then long-polls /sync (timeout 1 s; its own message answers it at once),
every --canary-interval seconds. Meanwhile pg_stat_activity and pg_locks of the database are sampled every
50 ms (the longest open transaction, lock waits), and the database logs statements over 50 ms and lock
waits over 20 ms (ALTER DATABASE ... SET), which are read back from the PostgreSQL log when it is readable.
Before the run, the pruner's and /notifications' statements are EXPLAINed on the seeded tables (in a
transaction rolled back afterwards): none may read a push table whole.

Needs aiohttp, psycopg2 and pyyaml (all in the project's .venv).
"""

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest_herd import ROOT, bench_module, git_version, helpers, log

CLIENT = "/_matrix/client/v3"
PG_LOG = Path("/var/log/postgresql/postgresql-15-main.log")
TARGETS = {"zero_after_receipts_ms": 200.0, "canary_p99_ratio": 2.0, "longest_transaction_ms": 100.0}
PUSH_TABLES = ("event_push_actions", "push_summary", "push_prune_marks")
BIG_TABLE = 10_000  # rows; a sequential scan of a push table this big fails the EXPLAIN check
MAX_POLLS = 100_000  # every loop is bounded in count as well as in time
# Text of the pruner's statements (homeserver/storage/push.py), to tell its transactions from the others.
PRUNER_STATEMENTS = ("pg_try_advisory_xact_lock", "pruned_stream_ordering", "DELETE FROM event_push_actions")


# -- the server and its database ------------------------------------------------------------------------


@dataclass
class Spawned:
    base_url: str
    pid: int
    dsn: str
    db_name: str
    log_path: Path


@contextlib.contextmanager
def spawn_ours(args: argparse.Namespace) -> Iterator[Spawned]:
    """Our server on a fresh PostgreSQL database, with its default push settings and the pruner's log lines."""
    import yaml

    bench = bench_module()
    db_name = f"catchup_{secrets.token_hex(4)}"
    directory = Path(tempfile.mkdtemp(prefix="catchup-"))
    port = bench.free_port()
    try:
        with bench.fresh_database(args.pg_url, db_name, args.keep) as dsn:
            watch_database(dsn, db_name)
            config_path = bench.ours_config(directory, dsn, port)
            config = yaml.safe_load(config_path.read_text())
            config["logging"]["loggers"] = {"homeserver.handlers.push_pruner": "INFO"}
            config["push"] = json.loads(args.push_config) if args.push_config else {}
            config_path.write_text(yaml.safe_dump(config))
            log_path = directory / "stdout.log"
            env = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
            command = [args.ours_python, "-m", "homeserver", "run", "-c", str(config_path)]
            log(f"starting our server on port {port}, database {db_name}, files in {directory}")
            with log_path.open("ab") as out:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
            try:
                bench.wait_healthy(process, f"http://127.0.0.1:{port}", log_path, timeout=300)
                yield Spawned(f"http://127.0.0.1:{port}", process.pid, dsn, db_name, log_path)
            finally:
                bench.stop(process)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


def watch_database(dsn: str, db_name: str) -> None:
    """Log the database's slow statements and lock waits (its new sessions: the server's)."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for setting, value in (("log_min_duration_statement", "50"), ("log_lock_waits", "on"),
                               ("deadlock_timeout", "'20ms'")):  # fmt: skip
            cur.execute(f"ALTER DATABASE {db_name} SET {setting} = {value}")
    conn.close()


# -- seeding ----------------------------------------------------------------------------------------------


@dataclass
class World:
    reader: str  # access token
    reader_id: str
    rooms: list[str]
    last_events: dict[str, str]  # room -> the latest real message, which the receipts name
    canaries: list[tuple[str, str]]  # (access token, room)
    seeded_actions: int = 0
    timings: dict[str, float] = field(default_factory=dict)


async def build_world(args: argparse.Namespace, server: Spawned) -> World:
    import aiohttp

    bench = bench_module()
    password = secrets.token_hex(12)
    prefix = f"catchup{secrets.token_hex(3)}_"
    timings: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=args.concurrency + 2)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), connector=connector) as session:
        client = bench.Client(session, server.base_url, bench.Stats())
        start = time.monotonic()
        names = ["reader", "sender", *(f"canary{i:03d}" for i in range(args.canaries))]
        jobs = [client.register(prefix + name, password) for name in names]
        tokens = await bench.bounded(args.concurrency, jobs, "register")
        reader, sender, canary_tokens = tokens[0], tokens[1], tokens[2:]
        _, who = await client.call("GET", f"{CLIENT}/account/whoami", token=reader)
        rooms = []
        for n in range(args.rooms):
            room = {"preset": "public_chat", "name": f"busy {n}"}
            _, created = await client.call("POST", f"{CLIENT}/createRoom", room, token=sender)
            rooms.append(created["room_id"])
            await client.call("POST", f"{CLIENT}/join/{quote(created['room_id'])}", {}, token=reader)
        canaries = []
        for first, second in zip(canary_tokens[::2], canary_tokens[1::2], strict=False):
            _, created = await client.call("POST", f"{CLIENT}/createRoom", {"preset": "public_chat"}, token=first)
            await client.call("POST", f"{CLIENT}/join/{quote(created['room_id'])}", {}, token=second)
            canaries += [(first, created["room_id"]), (second, created["room_id"])]
        timings["register, rooms, joins"] = time.monotonic() - start
        base = reserve_stream_orderings(server.dsn, args.actions)
        start = time.monotonic()
        last_events: dict[str, str] = {}
        real: dict[str, list[str]] = {room: [] for room in rooms}
        for n in range(args.messages):
            for room in rooms:
                body = {"msgtype": "m.text", "body": f"message {n} while you were away"}
                _, sent = await client.call("PUT", f"{CLIENT}/rooms/{quote(room)}/send/m.room.message/seed{n}",
                                            body, token=sender)  # fmt: skip
                last_events[room] = sent["event_id"]
                real[room].append(sent["event_id"])
        timings["real messages"] = time.monotonic() - start
    start = time.monotonic()
    copy_actions(server.dsn, who["user_id"], real, base, args.actions)
    timings["COPY push actions + ANALYZE"] = time.monotonic() - start
    world = World(reader, who["user_id"], rooms, last_events, canaries, args.actions, timings)
    return world


def reserve_stream_orderings(dsn: str, count: int) -> int:
    """Move the events counter on by `count`; returns the first of the reserved stream orderings."""
    import psycopg2

    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute("UPDATE stream_counters SET value = value + %s WHERE name = 'events' RETURNING value", (count,))
        return cur.fetchone()[0] - count + 1


def copy_actions(dsn: str, user_id: str, real: dict[str, list[str]], base: int, count: int) -> None:
    """`count` unread push actions for `user_id`, in one transaction, and its summaries counting them."""
    import psycopg2

    rooms = list(real)
    added = {room: [0, 0] for room in rooms}
    with contextlib.closing(psycopg2.connect(dsn)) as conn:
        with conn, conn.cursor() as cur:
            chunk = 100_000
            for start in range(0, count, chunk):
                lines = io.StringIO()
                for i in range(start, min(start + chunk, count)):
                    room = rooms[i % len(rooms)]
                    highlight = int(i % 50 == 0)
                    event_id = real[room][(i // len(rooms)) % len(real[room])]
                    lines.write(f"{user_id}\t{room}\t{base + i}\t{event_id}\t1\t{highlight}\t"
                                f"{'default' if highlight else chr(92) + 'N'}\n")  # fmt: skip
                    added[room][0] += 1
                    added[room][1] += highlight
                lines.seek(0)
                cur.copy_expert(
                    "COPY event_push_actions (user_id, room_id, stream_ordering, event_id, notify, highlight, sound)"
                    " FROM STDIN",
                    lines,
                )
                log(f"COPY: {min(start + chunk, count):,}/{count:,} push actions")
            for room, (notify, highlight) in added.items():
                cur.execute(
                    "UPDATE push_summary SET notification_count = notification_count + %s,"
                    " highlight_count = highlight_count + %s WHERE user_id = %s AND room_id = %s",
                    (notify, highlight, user_id, room),
                )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE event_push_actions")
            cur.execute("ANALYZE push_summary")


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# -- EXPLAIN of the pruner's statements on the seeded tables ------------------------------------------------


def explain_statements(dsn: str, world: World, batch_size: int) -> list[dict[str, Any]]:
    """Run one read batch, one expiry batch and /notifications through the store on one connection, as if
    the reader had read everything, EXPLAIN every statement on a push table, and roll it all back."""
    sys.path.insert(0, str(ROOT))
    from homeserver.storage.database import Txn
    from homeserver.storage.engines import PostgresEngine
    from homeserver.storage.push import PushStore

    engine = PostgresEngine({"dsn": dsn})
    conn = engine.connect()
    recorded: list[tuple[str, tuple]] = []

    class Recording(Txn):
        def execute(self, sql: str, args: Any = ()) -> Txn:
            if any(t in sql for t in PUSH_TABLES) and not sql.startswith("SELECT pg_"):
                recorded.append((sql, tuple(args)))
            return super().execute(sql, args)

    txn = Recording(engine, conn.cursor())

    class InOneTransaction:
        async def run(self, name: str, fn: Any, *args: Any, readonly: bool = False) -> Any:
            return fn(txn, *args)

    store = PushStore(InOneTransaction())  # type: ignore[arg-type]
    try:
        cur = conn.cursor()
        cur.execute("SELECT value FROM stream_counters WHERE name = 'events'")
        (top,) = cur.fetchone()
        cur.execute("UPDATE push_summary SET read_stream_ordering = %s WHERE user_id = %s", (top, world.reader_id))
        for call in (
            store.prune_read_actions(batch_size),
            store.prune_expired_actions(None, top, batch_size),
            store.notifications(world.reader_id, None, 20, False),
            store.notifications(world.reader_id, top, 20, True),
        ):
            run_inline(call)
        cur.execute("SELECT relname, reltuples FROM pg_class WHERE relname IN %s", (PUSH_TABLES,))
        rows = {name: int(tuples) for name, tuples in cur.fetchall()}
        plans = []
        for sql, args in recorded:
            cur.execute("EXPLAIN " + engine.convert_sql(sql), args)
            plan = [row[0] for row in cur.fetchall()]
            scanned = [t for t in PUSH_TABLES for line in plan if f"Seq Scan on {t} " in line]
            # PostgreSQL rightly reads a table of a few pages whole; a big one read whole is the failure.
            plans.append({"sql": sql, "plan": plan, "seq_scans": [t for t in scanned if rows.get(t, 0) > BIG_TABLE],
                          "seq_scans_of_small_tables": [f"{t} ({rows.get(t)} rows)" for t in scanned
                                                        if rows.get(t, 0) <= BIG_TABLE]})  # fmt: skip
        return plans
    finally:
        conn.rollback()
        conn.close()


def run_inline(coroutine: Any) -> Any:
    """The result of a coroutine that never waits (the store's transactions run inline here)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the store waited on something")


# -- sampling the database --------------------------------------------------------------------------------


class PgSampler(threading.Thread):
    """pg_stat_activity (with the ungranted locks in pg_locks) of the database every `interval` seconds."""

    QUERY = (
        "SELECT a.pid, a.backend_type, a.state, a.xact_start, a.query_start, a.wait_event_type, a.wait_event,"
        " extract(epoch FROM clock_timestamp() - a.xact_start), extract(epoch FROM clock_timestamp() - a.query_start),"
        " left(a.query, 160), (SELECT count(*) FROM pg_locks l WHERE NOT l.granted)"
        " FROM pg_stat_activity a WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
    )

    def __init__(self, dsn: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.interval = interval
        self.stop = threading.Event()
        self.samples: list[tuple[float, list[tuple]]] = []

    def run(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET log_min_duration_statement = -1")  # the sampler's own queries are not the server's
        try:
            for _ in range(10 * MAX_POLLS):
                if self.stop.is_set():
                    break
                with conn.cursor() as cur:
                    cur.execute(self.QUERY)
                    self.samples.append((time.monotonic(), cur.fetchall()))
                self.stop.wait(self.interval)
        finally:
            conn.close()

    def summary(self, start: float, end: float) -> dict[str, Any]:
        """The longest transaction and lock wait seen between `start` and `end` (time.monotonic())."""
        longest: dict[tuple, tuple[float, str, str]] = {}  # (pid, xact_start) -> (age s, query, backend type)
        pruner: set[tuple] = set()  # transactions seen running one of the pruner's statements
        waits: dict[tuple, tuple[float, str]] = {}  # (pid, query_start) -> (query age while waiting, query)
        ungranted = 0
        count = 0
        for at, rows in self.samples:
            if not start <= at <= end:
                continue
            count += 1
            for pid, kind, _state, xact_start, query_start, wait_type, _wait, xact_age, query_age, query, locks in rows:
                ungranted = max(ungranted, locks)
                if xact_start is not None and xact_age is not None:
                    key = (pid, xact_start)
                    if any(mark in query for mark in PRUNER_STATEMENTS):
                        pruner.add(key)
                    if float(xact_age) > longest.get(key, (0.0,))[0]:
                        longest[key] = (float(xact_age), query, kind)
                if wait_type == "Lock" and query_age is not None:
                    key = (pid, query_start)
                    if float(query_age) > waits.get(key, (0.0,))[0]:
                        waits[key] = (float(query_age), query)
        clients = [v for v in longest.values() if v[2] == "client backend"]
        top = max(clients, default=(0.0, "", ""))
        others = max((v for v in longest.values() if v[2] != "client backend"), default=None)
        wait = max(waits.values(), default=(0.0, ""))
        pruner_top = max((longest[k][0] for k in pruner), default=0.0)
        return {
            "samples": count,
            "longest_transaction_ms": round(top[0] * 1000, 1),
            "longest_transaction_query": top[1],
            "transactions_seen_over_100ms": sum(1 for v in clients if v[0] > 0.1),
            "pruner_transactions_seen": len(pruner),
            "longest_pruner_transaction_ms": round(pruner_top * 1000, 1),
            "longest_other_backend": None if others is None else {"ms": round(others[0] * 1000, 1), "type": others[2]},
            "lock_waits_seen": len(waits),
            "longest_lock_wait_ms_at_most": round(wait[0] * 1000, 1),
            "longest_lock_wait_query": wait[1],
            "max_ungranted_locks": ungranted,
        }  # fmt: skip


def postgres_log_lines(db_name: str, offset: int) -> dict[str, Any]:
    """The database's slow-statement and lock-wait lines PostgreSQL logged since `offset`, if readable."""
    try:
        with PG_LOG.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError as e:
        return {"readable": False, "why": str(e)}
    lines = [line for line in text.splitlines() if f"@{db_name} " in line]
    durations = [float(m.group(1)) for line in lines if (m := re.search(r"duration: ([\d.]+) ms", line))]
    waits = [line for line in lines if "still waiting for" in line or "acquired" in line]
    return {
        "readable": True,
        "statements_over_50ms": len(durations),
        "slowest_statement_ms": max(durations, default=None),
        "slow_statements": [line[-300:] for line in lines if "duration:" in line][:10],
        "lock_waits_over_20ms": waits[:10],
    }


def pg_log_offset() -> int:
    with contextlib.suppress(OSError):
        return PG_LOG.stat().st_size
    return 0


# -- the run ----------------------------------------------------------------------------------------------


@dataclass
class Call:
    kind: str  # send | sync
    started: float
    latency: float
    status: int


async def canary(session: Any, base: str, token: str, room: str, interval: float, offset: float,
                 stop: asyncio.Event, calls: list[Call]) -> None:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{base}{CLIENT}/sync", params={"timeout": "0"}, headers=headers) as resp:
        since = (await resp.json())["next_batch"]
    await asyncio.sleep(offset)
    next_at = time.monotonic()
    for n in range(MAX_POLLS):
        if stop.is_set():
            return
        started = time.monotonic()
        path = f"{base}{CLIENT}/rooms/{quote(room)}/send/m.room.message/c{n}-{secrets.token_hex(3)}"
        async with session.put(path, json={"msgtype": "m.text", "body": "still here"}, headers=headers) as resp:
            await resp.read()
        calls.append(Call("send", started, time.monotonic() - started, resp.status))
        started = time.monotonic()
        params = {"since": since, "timeout": "1000"}
        async with session.get(f"{base}{CLIENT}/sync", params=params, headers=headers) as resp:
            body = await resp.read()
        calls.append(Call("sync", started, time.monotonic() - started, resp.status))
        if resp.status == 200:
            since = json.loads(body)["next_batch"]
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def catch_up(args: argparse.Namespace, server: Spawned, world: World) -> dict[str, Any]:
    """Canaries from the start; the receipts after --idle s; until the read rows are gone and --after s."""
    import aiohttp

    calls: list[Call] = []
    stop = asyncio.Event()
    sampler = PgSampler(server.dsn, args.pg_sample_interval)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        health_before = await get_json(session, server.base_url + "/health")
        deleted_before = health_before["push_pruner"]["read_rows_deleted"]
        headers = {"Authorization": f"Bearer {world.reader}"}
        async with session.get(f"{server.base_url}{CLIENT}/sync", params={"timeout": "0"}, headers=headers) as resp:
            first = await resp.json()
        counts_before = {room: first["rooms"]["join"][room]["unread_notifications"] for room in world.rooms}
        sampler.start()
        tasks = [
            asyncio.create_task(canary(session, server.base_url, token, room, args.canary_interval,
                                       args.canary_interval * i / max(1, len(world.canaries)), stop, calls))
            for i, (token, room) in enumerate(world.canaries)
        ]  # fmt: skip
        idle_start = time.monotonic()
        await asyncio.sleep(args.idle)
        log("sending the receipts")
        receipts_at = time.monotonic()
        each = []
        for room in world.rooms:
            path = f"{CLIENT}/rooms/{quote(room)}/receipt/m.read/{quote(world.last_events[room])}"
            async with session.post(server.base_url + path, json={}, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
            each.append(round((time.monotonic() - receipts_at) * 1000, 1))
        receipts_done = time.monotonic()
        syncs, zero_at = 0, None
        for _ in range(100):
            params = {"since": first["next_batch"], "timeout": "0"}
            async with session.get(f"{server.base_url}{CLIENT}/sync", params=params, headers=headers) as resp:
                body = await resp.json()
            syncs += 1
            counts = [body["rooms"]["join"].get(r, {}).get("unread_notifications", {}) for r in world.rooms]
            if all(c.get("notification_count") == 0 for c in counts):
                zero_at = time.monotonic()
                break
        counts_after = {room: body["rooms"]["join"].get(room, {}).get("unread_notifications") for room in world.rooms}
        expected = world.seeded_actions + args.messages * len(world.rooms)
        pruner_start = pruner_end = None
        progress: list[tuple[float, int]] = []
        deadline = receipts_at + args.max_wait
        for _ in range(MAX_POLLS):
            if time.monotonic() > deadline:
                break
            status = (await get_json(session, server.base_url + "/health"))["push_pruner"]
            deleted = status["read_rows_deleted"] - deleted_before
            progress.append((time.monotonic() - receipts_at, deleted))
            if deleted and pruner_start is None:
                pruner_start = time.monotonic()
            if deleted >= expected and not status["running"]:
                pruner_end = time.monotonic()
                break
            await asyncio.sleep(0.25)
        clear_end = pruner_end or time.monotonic()
        await asyncio.sleep(args.after)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        end = time.monotonic()
        health_after = await get_json(session, server.base_url + "/health")
    sampler.stop.set()
    sampler.join(5)
    pruning_from = pruner_start - 0.25 if pruner_start else receipts_at  # it began within one poll before
    return {
        "counts_before": counts_before,
        "counts_after": counts_after,
        "receipts_ms": round((receipts_done - receipts_at) * 1000, 1),
        "receipts_done_at_ms": each,
        "zero_after_receipts_ms": None if zero_at is None else round((zero_at - receipts_at) * 1000, 1),
        "syncs_until_zero": syncs if zero_at else None,
        "rows_to_prune": expected,
        "pruner_started_after_s": None if pruner_start is None else round(pruner_start - receipts_at, 2),
        "pruning_s": None if not (pruner_start and pruner_end) else round(pruner_end - pruning_from, 2),
        "rows_gone_after_s": None if pruner_end is None else round(pruner_end - receipts_at, 2),
        "pruner_health": health_after["push_pruner"],
        "canary": {
            "idle": canary_summary(calls, idle_start + args.idle / 3, receipts_at),  # after a warm-up
            "pruning": canary_summary(calls, pruning_from, clear_end),
            "clear": canary_summary(calls, receipts_at, clear_end),
            "after": canary_summary(calls, clear_end, end),
        },
        "database": {
            "idle": sampler.summary(idle_start + args.idle / 3, receipts_at),
            "clear": sampler.summary(receipts_at, clear_end),
        },
        "progress": [(round(t, 1), n) for t, n in progress[:: max(1, len(progress) // 40)]],
        # [seconds after the receipts, p50, p99 ms] of the canary calls started in each 5 s window
        "canary_timeline": timeline(calls, receipts_at),
        # [seconds after the receipts, send|sync, ms, status] of the slowest canary calls
        "slowest_canary_calls": [[round(c.started - receipts_at, 2), c.kind, round(c.latency * 1000, 1), c.status]
                                 for c in sorted(calls, key=lambda c: -c.latency)[:15]],
    }  # fmt: skip


async def get_json(session: Any, url: str) -> dict[str, Any]:
    async with session.get(url) as resp:
        return await resp.json()


def timeline(calls: list[Call], zero: float, window: float = 5.0) -> list[tuple[float, float | None, float | None]]:
    lt = helpers()
    windows: dict[int, list[float]] = {}
    for c in calls:
        if c.status == 200:
            windows.setdefault(int((c.started - zero) // window), []).append(c.latency * 1000)
    return [(n * window, _r(lt.percentile(v, 50)), _r(lt.percentile(v, 99))) for n, v in sorted(windows.items())]


def canary_summary(calls: list[Call], start: float, end: float) -> dict[str, Any]:
    lt = helpers()
    out: dict[str, Any] = {}
    for kind in ("send", "sync", "all"):
        chosen = [c for c in calls if start <= c.started < end and kind in (c.kind, "all")]
        ok = [c.latency * 1000 for c in chosen if c.status == 200]
        out[kind] = {
            "requests": len(chosen),
            "errors": len(chosen) - len(ok),
            **{f"p{q}_ms": _r(lt.percentile(ok, q)) for q in (50, 99)},
            "max_ms": _r(max(ok, default=None)),
        }
    return out


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# -- the report -------------------------------------------------------------------------------------------


def verdict(run: dict[str, Any]) -> dict[str, Any]:
    idle, clear = run["canary"]["idle"]["all"], run["canary"]["pruning"]["all"]
    ratio = (clear["p99_ms"] or 1e9) / max(idle["p99_ms"] or 1e-9, 1e-9)
    longest = run["database"]["clear"]["longest_transaction_ms"]
    pruner = run["database"]["clear"]["longest_pruner_transaction_ms"]
    server_timed = run["pruner_health"]["longest_batch_ms"]  # the wait for the GIL between statements included
    zero = run["zero_after_receipts_ms"]
    return {
        "next_sync_shows_zero": {"syncs": run["syncs_until_zero"], "ms": zero,
                                 "met": run["syncs_until_zero"] == 1 and zero is not None
                                 and zero < TARGETS["zero_after_receipts_ms"]},
        "canary_p99_within_2x_idle": {"idle_p99_ms": idle["p99_ms"], "pruning_p99_ms": clear["p99_ms"],
                                      "ratio": round(ratio, 2), "met": ratio <= TARGETS["canary_p99_ratio"]},
        "no_transaction_over_100ms": {"longest_seen_ms": longest, "idle_longest_seen_ms":
                                      run["database"]["idle"]["longest_transaction_ms"],
                                      "met": longest < TARGETS["longest_transaction_ms"]},
        "no_pruner_transaction_over_100ms": {"longest_seen_ms": pruner, "server_timed_ms": server_timed,
                                             "met": pruner < TARGETS["longest_transaction_ms"]},
        "read_rows_all_deleted": {"rows": run["rows_to_prune"], "met": run["rows_gone_after_s"] is not None},
    }  # fmt: skip


def print_report(report: dict[str, Any]) -> None:
    run = report["run"]
    print(f"\n{report['started']}, {report['minutes']} min; {report['machine']}; load average before "
          f"{report['load_average_before']}\ncommand: {report['command']}\nserver: {report['version']}, "
          f"push settings {report['push_settings']}")  # fmt: skip
    print(f"seeded: {report['seeded_actions']:,} push actions in {report['rooms']} rooms + {report['messages']} real "
          f"messages each; {report['seeding_s']}")  # fmt: skip
    print(f"unread before: {run['counts_before']}\nafter the receipts ({run['receipts_ms']} ms for "
          f"{report['rooms']}): zero in sync after {run['zero_after_receipts_ms']} ms, "
          f"{run['syncs_until_zero']} sync(s)")  # fmt: skip
    print(f"pruner: started {run['pruner_started_after_s']} s after the receipts, deleted {run['rows_to_prune']:,} "
          f"read rows in {run['pruning_s']} s (all gone {run['rows_gone_after_s']} s after the receipts); "
          f"/health {run['pruner_health']}")  # fmt: skip
    for phase, c in run["canary"].items():
        parts = [f"{k} {v['requests']} req {v['errors']} err p50 {v['p50_ms']} p99 {v['p99_ms']} max {v['max_ms']} ms"
                 for k, v in c.items()]  # fmt: skip
        print(f"canary {phase:8} " + "; ".join(parts))
    for phase, d in run["database"].items():
        print(f"database {phase}: {d}")
    print(f"PostgreSQL log: {report['postgres_log']}")
    print(f"server log, slow transactions (> 500 ms): {report['server_slow_transactions']}")
    print(f"server log, pruner lines: {report['pruner_log_lines']}")
    print(f"EXPLAIN: {len(report['explain'])} statements, sequential scans of push tables: "
          f"{sum(len(p['seq_scans']) for p in report['explain'])}")  # fmt: skip
    for name, value in report["verdict"].items():
        print(f"target {name}: {value}")


def catchup(args: argparse.Namespace) -> int:
    lt = helpers()
    with contextlib.suppress(ImportError):
        import aiohttp  # noqa: F401
    if "aiohttp" not in sys.modules:
        raise SystemExit("the catch-up test needs aiohttp: run it with the project's .venv")
    if args.canaries % 2 or args.rooms < 1 or args.actions < 1 or args.messages < 1:
        raise SystemExit("--canaries must be even, --rooms, --actions and --messages at least 1")
    lt.raise_own_fd_limit()
    started = time.time()
    with spawn_ours(args) as server:
        world = asyncio.run(build_world(args, server))
        log("seeded: " + ", ".join(f"{k} {v:.0f} s" for k, v in world.timings.items()))
        health = asyncio.run(_health(server.base_url))
        plans = explain_statements(server.dsn, world, 500)
        load_before = os.getloadavg()
        pg_offset = pg_log_offset()
        run = asyncio.run(catch_up(args, server, world))
        server_log = server.log_path.read_text(errors="replace")
        report = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
            "machine": lt.machine_description(),
            "load_average_before": [round(x, 2) for x in load_before],
            "version": "ours, " + git_version(),
            "push_settings": {**push_defaults(), **(json.loads(args.push_config) if args.push_config else {})},
            "rooms": args.rooms,
            "messages": args.messages,
            "canaries": args.canaries,
            "seeded_actions": world.seeded_actions,
            "seeding_s": {k: round(v, 1) for k, v in world.timings.items()},
            "health_before": health.get("push_pruner"),
            "run": run,
            "postgres_log": postgres_log_lines(server.db_name, pg_offset),
            "server_slow_transactions": [line for line in server_log.splitlines() if "slow transaction" in line][:10],
            "pruner_log_lines": [line for line in server_log.splitlines() if "push pruner:" in line][-5:],
            "explain": plans,
        }
    report["minutes"] = round((time.time() - started) / 60, 1)
    report["verdict"] = verdict(run)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0 if all(v["met"] for v in report["verdict"].values()) else 1


async def _health(base_url: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        return await get_json(session, base_url + "/health")


def push_defaults() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from dataclasses import asdict

    from homeserver.config.options import PushConfig

    return asdict(PushConfig())


# -- command line ---------------------------------------------------------------------------------------------


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the `catchup` subcommand on scripts/loadtest.py's subparsers."""
    p = sub.add_parser("catchup", help="a user reads a million notifications while canaries send and sync",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--spawn", choices=("ours",), required=True, help="start our server on a fresh PostgreSQL DB")
    p.add_argument("--actions", type=int, default=1_000_000, help="unread push actions seeded (default 1,000,000)")
    p.add_argument("--rooms", type=int, default=4, help="rooms they are spread over (default 4)")
    p.add_argument("--messages", type=int, default=20, help="real messages sent into each room first (default 20)")
    p.add_argument("--canaries", type=int, default=50, help="canary clients, in rooms of two (default 50)")
    p.add_argument("--canary-interval", type=float, default=1.0, help="seconds between a canary's send+sync")
    p.add_argument("--idle", type=float, default=30, help="seconds of canaries before the receipts (default 30)")
    p.add_argument("--after", type=float, default=5, help="seconds of canaries after the rows are gone")
    p.add_argument("--max-wait", type=float, default=900, help="give up waiting for the pruner after this, s")
    p.add_argument("--pg-sample-interval", type=float, default=0.05, help="seconds between pg_stat_activity samples")
    p.add_argument("--concurrency", type=int, default=20, help="requests in flight while seeding")
    p.add_argument("--push-config", help='JSON merged into the push section, to try settings: {"prune_pause_ms": 100}')
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="PostgreSQL for --spawn")
    p.add_argument("--ours-python", default=str(ROOT / ".venv" / "bin" / "python"))
    p.add_argument("--keep", action="store_true", help="keep the database and the server's directory")
    p.add_argument("--json", help="also write the report here")
    p.set_defaults(run=catchup)
    return p


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parser(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args()
    sys.exit(parsed.run(parsed))

#!/usr/bin/env python3
"""The pre-upgrade profile: a steady mix of client traffic at a target rate, judged against thresholds.

    .venv/bin/python scripts/loadtest.py profile --spawn --rate 20 --duration 60        # a server of this tree
    .venv/bin/python scripts/loadtest.py profile --base-url http://127.0.0.1:8008 \\
        --accounts shared-secret --secret-file /etc/homeserver/shared_secret --json profile.json

Set-up: --users accounts (registered with m.login.dummy, or with the registration shared secret, or logged in to
existing accounts PREFIX0..PREFIXn-1), --rooms public rooms, user i living in room i % rooms (user i created
room i), one message in each. Then, for --duration seconds, an open-loop scheduler starts one operation every
1/--rate seconds whether or not earlier ones have finished (at most --max-in-flight at once; one that would
exceed it is not issued, and counted), drawn from --mix:

  sync     an incremental /sync with timeout=0 by a random user
  send     a message into the sender's room (its delivery to the room's long-pollers is timed too)
  receipt  m.read on the latest message of the user's room
  typing   typing=true in the user's room
  whoami   /account/whoami
  join     a user joins one of the other rooms, or leaves it if already in (reported as join and leave)

Meanwhile the first --syncers users long-poll /sync (timeout 30 s) the whole time, counted apart: their latency
is the wait, so what is timed instead is delivery, from the start of a send to the message appearing in the sync
of every other long-poller of that room. After the last operation the profile waits up to --drain seconds for
deliveries still due; a message a long-poller never saw is an undelivered error.

An error is an answer other than 2xx, a timeout (--timeout) or a connection error; 429 and 503 refusals (the
server's admission control and rate limits) are shown apart, and count as errors unless --allow-refusals.
Thresholds (--max-error-rate, --p95-ms, --p99-ms) take a number for every row of the table and for all
operations together, and op=N pairs for single rows (e.g. --p95-ms 500,delivery=1000); --min-rate is the share
of the target rate that must have been issued.

Exit status: 0 every threshold met, 1 one was not (the last line names it), 2 usage error, target unreachable or
set-up refused. Needs aiohttp (in the project's .venv).
"""

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import random
import resource
import secrets
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLIENT = "/_matrix/client/v3"
OPERATIONS = ("sync", "send", "receipt", "typing", "whoami", "join")
DEFAULT_MIX = "sync=30,send=20,receipt=15,typing=15,whoami=10,join=10"
ROWS = ("sync", "send", "receipt", "typing", "whoami", "join", "leave")  # join ops leave when already in
THRESHOLD_KEYS = (*ROWS, "delivery", "long-poll", "all")
REFUSED = (429, 503)
SYNC = f"{CLIENT}/sync?filter=" + urllib.parse.quote('{"room":{"timeline":{"limit":100}}}')  # no gaps between polls
SETUP_ATTEMPTS = 10  # set-up requests refused with 429/503 are retried after their Retry-After, this many times
EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class Usage(Exception):
    """Bad options, an unreachable target or a refused set-up: exit status 2."""


def helpers() -> Any:
    """scripts/loadtest.py (imported late: it imports this module)."""
    main = sys.modules.get("__main__")
    if Path(getattr(main, "__file__", "") or "").name == "loadtest.py":
        return main
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import loadtest

    return loadtest


# -- options ----------------------------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    mix = parse_pairs(text, OPERATIONS, "--mix")
    if "*" in mix or not any(mix.values()) or any(v < 0 for v in mix.values()):
        raise Usage(f"--mix needs op=weight pairs with a positive total (ops: {', '.join(OPERATIONS)}), not {text!r}")
    return {op: weight for op, weight in mix.items() if weight > 0}


def parse_pairs(text: str, keys: tuple[str, ...], option: str) -> dict[str, float]:
    """'500,send=300' -> {'*': 500, 'send': 300}: a bare number is the default for every key."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.rpartition("=")
        if key and key not in keys:
            raise Usage(f"{option}: unknown key {key!r}; known: {', '.join(keys)}")
        try:
            out[key or "*"] = float(value)
        except ValueError:
            raise Usage(f"{option}: {value!r} is not a number") from None
    return out


@dataclass(frozen=True)
class Thresholds:
    error_rate: dict[str, float]
    p95_ms: dict[str, float]
    p99_ms: dict[str, float]
    min_rate: float  # fraction of the target rate that must have been issued
    allow_refusals: bool

    @staticmethod
    def limit(values: dict[str, float], row: str) -> float | None:
        return values.get(row, values.get("*"))


# -- what one row of the table counts ----------------------------------------------------------------------


@dataclass
class Stats:
    count: int = 0
    errors: int = 0
    refusals: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # of successful requests only
    reasons: Counter = field(default_factory=Counter)  # why not a success -> how many

    def record(self, status: int, latency_s: float, reason: str = "") -> None:
        self.count += 1
        if 200 <= status < 300 and not reason:
            self.latencies_ms.append(latency_s * 1000)
            return
        self.reasons[reason or f"HTTP {status}"] += 1
        if status in REFUSED and not reason:
            self.refusals += 1
        else:
            self.errors += 1

    def add(self, other: "Stats") -> None:
        self.count, self.errors, self.refusals = (
            self.count + other.count, self.errors + other.errors, self.refusals + other.refusals
        )  # fmt: skip
        self.latencies_ms += other.latencies_ms
        self.reasons.update(other.reasons)

    def summary(self, seconds: float) -> dict[str, Any]:
        pct = helpers().percentile
        return {
            "count": self.count,
            "errors": self.errors,
            "refusals": self.refusals,
            **{f"p{q}_ms": _r(pct(self.latencies_ms, q)) for q in (50, 95, 99)},
            "max_ms": _r(max(self.latencies_ms, default=None)),
            "rate_per_s": round(self.count / seconds, 2) if seconds > 0 else None,
            "reasons": dict(self.reasons.most_common()),
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# -- HTTP ---------------------------------------------------------------------------------------------------


class Http:
    """Timed requests over one aiohttp session (keep-alive, as clients do), recorded per table row."""

    def __init__(self, session: Any, base_url: str, timeout: float) -> None:
        self.session, self.base_url, self.timeout = session, base_url.rstrip("/"), timeout
        self.stats: dict[str, Stats] = {}
        self.setup_gate = asyncio.Semaphore(4)  # set-up goes gently: registration may be slow (bcrypt)

    async def call(
        self, row: str | None, method: str, path: str, token: str | None = None, body: Any = None, timeout: float = 0
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, parsed JSON body, headers); status 0 when there was no answer. Recorded under `row` unless
        it is None (set-up)."""
        import aiohttp

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.monotonic()
        status, data, reason, answer_headers = 0, None, "", {}
        try:
            async with self.session.request(
                method, self.base_url + path, json=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as resp:  # fmt: skip
                raw = await resp.read()
                status, answer_headers = resp.status, dict(resp.headers)
        except TimeoutError:
            reason = "timeout"
        except (aiohttp.ClientError, OSError) as e:
            reason = type(e).__name__
        else:
            try:
                data = json.loads(raw) if raw else None
            except ValueError:  # an error page from a proxy is still the error its status says
                reason = f"HTTP {status}, not JSON" if 200 <= status < 300 else ""
        if row is not None:
            self.stats.setdefault(row, Stats()).record(status, time.monotonic() - started, reason)
        return (0 if reason else status), data, answer_headers

    async def setup(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        """A set-up request that must succeed: refusals are retried after their Retry-After, anything else fails."""
        for _ in range(SETUP_ATTEMPTS):
            async with self.setup_gate:
                status, data, headers = await self.call(None, method, path, token, body)
            if status not in REFUSED:
                break
            await asyncio.sleep(retry_after(data, headers))
        if status != 200:
            raise Usage(f"set-up failed: {method} {path.split('?')[0]} answered {status or 'nothing'} {data or ''}")
        return data


def retry_after(data: Any, headers: dict[str, str]) -> float:
    with contextlib.suppress(TypeError, KeyError, ValueError):
        return min(max(data["retry_after_ms"] / 1000, 0.05), 30)
    with contextlib.suppress(TypeError, ValueError):
        return min(max(float(headers.get("Retry-After", "")), 0.05), 30)
    return 1.0


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# -- set-up: accounts and rooms ------------------------------------------------------------------------------


@dataclass
class User:
    user_id: str
    token: str
    home: int  # index of the room the user sends into
    since: str = ""  # of the user's short syncs


async def make_account(http: Http, args: argparse.Namespace, index: int, secret: str) -> User:
    home = index % args.rooms
    localpart = f"{args.user_prefix}{index}"
    if args.accounts == "login":
        body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart}, "password": secret}
        answer = await http.setup("POST", f"{CLIENT}/login", body=body)
        return User(answer["user_id"], answer["access_token"], home)
    password = secrets.token_hex(12)
    if args.accounts == "shared-secret":
        path = "/_synapse/admin/v1/register"
        nonce = (await http.setup("GET", path))["nonce"]
        message = b"\x00".join(part.encode() for part in (nonce, localpart, password, "notadmin"))
        mac = hmac.new(secret.encode(), message, hashlib.sha1).hexdigest()
        body = {"nonce": nonce, "username": localpart, "password": password, "admin": False, "mac": mac}
        answer = await http.setup("POST", path, body=body)
        return User(answer["user_id"], answer["access_token"], home)
    body = {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}
    answer = await http.setup("POST", f"{CLIENT}/register", body=body)
    return User(answer["user_id"], answer["access_token"], home)


@dataclass
class World:
    users: list[User]
    rooms: list[str]
    latest: dict[int, str]  # room index -> latest event id (for receipts)
    away: set[tuple[int, int]] = field(default_factory=set)  # (user, room) pairs joined by the churn
    busy: set[tuple[int, int]] = field(default_factory=set)  # pairs with a join or leave in flight


async def build_world(http: Http, args: argparse.Namespace) -> World:
    users = await asyncio.gather(*(make_account(http, args, i, args.secret) for i in range(args.users)))
    rooms = []
    for r in range(args.rooms):  # user r creates room r
        body = {"preset": "public_chat", "name": f"load profile {r}"}
        rooms.append((await http.setup("POST", f"{CLIENT}/createRoom", users[r].token, body))["room_id"])
    joins = [http.setup("POST", f"{CLIENT}/join/{quote(rooms[u.home])}", u.token, {}) for u in users[args.rooms :]]
    await asyncio.gather(*joins)
    latest = {}
    for r, room_id in enumerate(rooms):
        path = f"{CLIENT}/rooms/{quote(room_id)}/send/m.room.message/seed{secrets.token_hex(4)}"
        body = {"msgtype": "m.text", "body": "load profile: the first message"}
        latest[r] = (await http.setup("PUT", path, users[r].token, body))["event_id"]

    first = await asyncio.gather(*(http.setup("GET", f"{SYNC}&timeout=0", u.token) for u in users))
    for user, answer in zip(users, first, strict=True):
        user.since = answer["next_batch"]
    return World(list(users), rooms, latest)


# -- the traffic ----------------------------------------------------------------------------------------------


@dataclass
class Message:
    room: int
    sender: int
    sent_at: float  # time.monotonic() when the send started
    expected: set[int]  # long-pollers of the room other than the sender
    sent: bool = False  # the send got its 2xx
    seen: dict[int, float] = field(default_factory=dict)  # long-poller -> time.monotonic() it appeared


class Profile:
    def __init__(self, args: argparse.Namespace, http: Http, world: World) -> None:
        self.args, self.http, self.world = args, http, world
        self.rng = random.Random(args.seed)
        self.run_id = secrets.token_hex(4)
        self.sends = itertools.count()
        self.messages: dict[str, Message] = {}
        self.issued = self.not_issued = 0
        self.lags_ms: list[float] = []
        self.gaps = 0  # long-poll answers whose timeline was `limited` (messages may have been skipped)
        self.stopping = False
        self.started = self.ended = 0.0
        self.cpu_s: dict[str, float | None] = {}  # CPU seconds used during the traffic: generator, server

    def cpu_now(self) -> dict[str, float | None]:
        pid = self.args.server_pid
        return {"generator": time.process_time(), "server": helpers().cpu_seconds(pid) if pid else None}

    def syncers_of(self, room: int) -> set[int]:
        return {i for i in range(self.args.syncers) if self.world.users[i].home == room}

    # one operation of each kind

    async def op_sync(self, u: int) -> None:
        user = self.world.users[u]
        path = f"{SYNC}&timeout=0&since={quote(user.since)}"
        status, data, _ = await self.http.call("sync", "GET", path, user.token)
        if status == 200 and isinstance(data, dict) and "next_batch" in data:
            user.since = data["next_batch"]

    async def op_send(self, u: int) -> None:
        user = self.world.users[u]
        mark = f"{self.run_id}.{next(self.sends)}"
        message = Message(user.home, u, time.monotonic(), self.syncers_of(user.home) - {u})
        self.messages[mark] = message
        path = f"{CLIENT}/rooms/{quote(self.world.rooms[user.home])}/send/m.room.message/{mark}"
        body = {"msgtype": "m.text", "body": f"load profile message {mark}", "profile_mark": mark}
        status, data, _ = await self.http.call("send", "PUT", path, user.token, body)
        if 200 <= status < 300:
            message.sent = True
            with contextlib.suppress(TypeError, KeyError):
                self.world.latest[user.home] = data["event_id"]

    async def op_receipt(self, u: int) -> None:
        user = self.world.users[u]
        room, event_id = quote(self.world.rooms[user.home]), quote(self.world.latest[user.home])
        await self.http.call("receipt", "POST", f"{CLIENT}/rooms/{room}/receipt/m.read/{event_id}", user.token, {})

    async def op_typing(self, u: int) -> None:
        user = self.world.users[u]
        path = f"{CLIENT}/rooms/{quote(self.world.rooms[user.home])}/typing/{quote(user.user_id)}"
        await self.http.call("typing", "PUT", path, user.token, {"typing": True, "timeout": 5000})

    async def op_whoami(self, u: int) -> None:
        await self.http.call("whoami", "GET", f"{CLIENT}/account/whoami", self.world.users[u].token)

    async def op_join(self, u: int) -> None:
        others = [r for r in range(len(self.world.rooms)) if r != self.world.users[u].home]
        pair = (u, self.rng.choice(others))
        if pair in self.world.busy:
            return await self.op_whoami(u)  # rare: keep the rate rather than race our own membership change
        self.world.busy.add(pair)
        leaving = pair in self.world.away
        room, token = quote(self.world.rooms[pair[1]]), self.world.users[u].token
        path = f"{CLIENT}/rooms/{room}/leave" if leaving else f"{CLIENT}/join/{room}"
        try:
            status, _, _ = await self.http.call("leave" if leaving else "join", "POST", path, token, {})
            if 200 <= status < 300:
                (self.world.away.discard if leaving else self.world.away.add)(pair)
        finally:
            self.world.busy.discard(pair)

    # the long-pollers

    async def long_poll(self, s: int) -> None:
        user = self.world.users[s]
        since = user.since
        wait_s = self.args.long_poll_timeout / 1000
        while not self.stopping:
            path = f"{SYNC}&timeout={self.args.long_poll_timeout}&since={quote(since)}"
            status, data, headers = await self.http.call("long-poll", "GET", path, user.token, timeout=wait_s + 10)
            if status == 200 and isinstance(data, dict) and "next_batch" in data:
                self.saw(s, data, time.monotonic())
                since = data["next_batch"]
            elif not self.stopping:  # back off as a client does, instead of spinning on a failing server
                await asyncio.sleep(retry_after(data, headers) if status in REFUSED else 1.0)

    def saw(self, s: int, data: dict[str, Any], at: float) -> None:
        """Note the messages long-poller `s` got in its own room (rooms it joins come `limited`: not a gap)."""
        home = self.world.rooms[self.world.users[s].home]
        timeline = (((data.get("rooms") or {}).get("join") or {}).get(home) or {}).get("timeline") or {}
        self.gaps += bool(timeline.get("limited"))
        for event in timeline.get("events") or ():
            message = self.messages.get(str((event.get("content") or {}).get("profile_mark")))
            if message is not None and s in message.expected:
                message.seen.setdefault(s, at)

    # the scheduler

    async def run(self) -> None:
        ops: dict[str, Callable[[int], Awaitable[None]]] = {op: getattr(self, f"op_{op}") for op in self.args.mix}
        names, weights = list(ops), list(self.args.mix.values())
        pollers = [asyncio.create_task(self.long_poll(s)) for s in range(self.args.syncers)]
        tasks: set[asyncio.Task] = set()  # the operations in flight
        planned = int(self.args.rate * self.args.duration)
        self.started, cpu_before = time.monotonic(), self.cpu_now()
        for n in range(planned):
            due = self.started + n / self.args.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            self.lags_ms.append((time.monotonic() - due) * 1000)
            if len(tasks) >= self.args.max_in_flight:
                self.not_issued += 1
                continue
            op = self.rng.choices(names, weights)[0]
            task = asyncio.create_task(ops[op](self.rng.randrange(len(self.world.users))))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.issued += 1
        self.ended = max(time.monotonic(), self.started + self.args.duration)
        after = self.cpu_now()
        self.cpu_s = {k: None if v is None or after[k] is None else after[k] - v for k, v in cpu_before.items()}
        await asyncio.gather(*tasks)
        await self.wait_for_deliveries()
        self.stopping = True
        for poller in pollers:
            poller.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)

    async def wait_for_deliveries(self) -> None:
        deadline = time.monotonic() + self.args.drain
        while time.monotonic() < deadline and any(
            m.sent and m.expected - m.seen.keys() for m in self.messages.values()
        ):
            await asyncio.sleep(0.05)

    def delivery_stats(self) -> Stats:
        stats = Stats()
        for message in self.messages.values():
            if not message.sent:
                continue
            for s in sorted(message.expected):
                if s in message.seen:
                    stats.record(200, message.seen[s] - message.sent_at)
                else:
                    stats.record(0, 0.0, "undelivered")
        return stats


# -- the report -------------------------------------------------------------------------------------------------


def build_report(args: argparse.Namespace, target_url: str, profile: Profile) -> dict[str, Any]:
    lt = helpers()
    seconds = profile.ended - profile.started
    stats = profile.http.stats
    rows = {row: stats[row].summary(seconds) for row in ROWS if row in stats}
    everything = Stats()
    for row in ROWS:
        everything.add(stats.get(row, Stats()))
    rows["all"] = everything.summary(seconds)
    rows["delivery"] = profile.delivery_stats().summary(seconds)
    rows["long-poll"] = stats.get("long-poll", Stats()).summary(seconds)
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):  # its latency is the wait, not the server's speed
        rows["long-poll"][key] = None
    planned = int(args.rate * args.duration)
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": lt.machine_description(),
        # the machine may be shared: CPU pressure says whether the server waited for a CPU (Linux PSI, % of 10 s)
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_pressure_pct_after": lt.cpu_pressure(),
        "target": target_url,
        "settings": {
            "rate_per_s": args.rate, "duration_s": args.duration, "mix": args.mix, "users": args.users,
            "rooms": args.rooms, "syncers": args.syncers, "max_in_flight": args.max_in_flight,
            "timeout_s": args.timeout, "long_poll_timeout_ms": args.long_poll_timeout, "seed": args.seed,
        },
        "load": {
            "planned": planned,
            "issued": profile.issued,
            "not_issued_in_flight_limit": profile.not_issued,
            "seconds": round(seconds, 2),
            "achieved_rate_per_s": round(profile.issued / seconds, 2) if seconds > 0 else 0.0,
            "scheduler_lag_p99_ms": _r(lt.percentile(profile.lags_ms, 99)),
            **{f"{k}_cpu_share": None if v is None else round(v / seconds, 3) for k, v in profile.cpu_s.items()},
            "long_poll_gaps": profile.gaps,
        },
        "rows": rows,
    }  # fmt: skip


def failures(report: dict[str, Any], limits: Thresholds) -> list[str]:
    """Each threshold that was not met, in words."""
    out = []
    load = report["load"]
    target = report["settings"]["rate_per_s"]
    if load["achieved_rate_per_s"] < limits.min_rate * target:
        out.append(
            f"achieved rate {load['achieved_rate_per_s']}/s < {limits.min_rate:g} x target {target:g}/s "
            f"({load['not_issued_in_flight_limit']} not issued at the in-flight limit)"
        )
    for row, s in report["rows"].items():
        if not s["count"]:
            continue
        bad = s["errors"] + (0 if limits.allow_refusals else s["refusals"])
        limit = limits.limit(limits.error_rate, row)
        if limit is not None and bad / s["count"] > limit:
            why = ", ".join(f"{n} x {reason}" for reason, n in list(s["reasons"].items())[:3])
            out.append(f"error rate of {row} {bad / s['count']:.2%} ({bad} of {s['count']}: {why}) > {limit:.2%}")
        for q, values in (("p95", limits.p95_ms), ("p99", limits.p99_ms)):
            limit, value = limits.limit(values, row), s[f"{q}_ms"]
            if row != "long-poll" and limit is not None and value is not None and value > limit:
                out.append(f"{q} of {row} {value} ms > {limit:g} ms")
    return out


def print_report(report: dict[str, Any], failed: list[str]) -> None:
    settings, load = report["settings"], report["load"]
    print(f"{report['date']}  {report['machine']}")
    print(f"command: {report['command']}")
    print(f"load average {report['load_average_after']}, CPU pressure {report['cpu_pressure_pct_after']}% (at the end)")
    print(
        f"target {report['target']}: {settings['users']} users in {settings['rooms']} rooms, "
        f"{settings['syncers']} long-polling; mix {','.join(f'{k}={v:g}' for k, v in settings['mix'].items())}"
    )
    print(f"\n{'operation':<10} {'count':>7} {'errors':>7} {'refused':>8} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'rate/s':>8}")  # fmt: skip
    for row, s in report["rows"].items():
        cells = [_cell(s[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "rate_per_s")]
        print(f"{row:<10} {s['count']:>7} {s['errors']:>7} {s['refusals']:>8} " + " ".join(f"{c:>8}" for c in cells))
    print(
        f"\n(delivery: send start to the message in each other long-poller's sync of the room, errors = undelivered;"
        f" long-poll: {settings['long_poll_timeout_ms']} ms polls, latency not meaningful)"
    )
    print(
        f"load: target {settings['rate_per_s']:g} ops/s for {settings['duration_s']:g} s, issued {load['issued']} of "
        f"{load['planned']} in {load['seconds']} s = {load['achieved_rate_per_s']}/s "
        f"({load['not_issued_in_flight_limit']} not issued at the in-flight limit of {settings['max_in_flight']}); "
        f"scheduler lag p99 {load['scheduler_lag_p99_ms']} ms; CPU (share of one core): load generator "
        f"{load['generator_cpu_share']}, server {load['server_cpu_share'] or 'unknown (no --server-pid)'}"
    )
    if load["long_poll_gaps"]:
        print(f"  {load['long_poll_gaps']} long-poll answers had a limited timeline: deliveries may be missed")
    for row, s in report["rows"].items():
        if s["reasons"]:
            print(f"  {row}: {', '.join(f'{n} x {reason}' for reason, n in s['reasons'].items())}")
    print("PASS" if not failed else "FAIL: " + "; ".join(failed))


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


# -- running it -----------------------------------------------------------------------------------------------


async def run_profile(args: argparse.Namespace, base_url: str) -> Profile:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=args.max_in_flight + args.syncers + 8)
    async with aiohttp.ClientSession(connector=connector) as session:
        http = Http(session, base_url, args.timeout)
        status, _, _ = await http.call(None, "GET", "/_matrix/client/versions", timeout=10)
        if status != 200:
            raise Usage(f"target unreachable: GET {base_url}/_matrix/client/versions answered {status or 'nothing'}")
        try:
            world = await build_world(http, args)
        except (KeyError, TypeError) as e:  # a 200 without the field every server sends
            raise Usage(f"set-up failed: an answer without {e}") from None
        profile = Profile(args, http, world)
        await profile.run()
        return profile


def check(args: argparse.Namespace) -> Thresholds:
    args.mix = parse_mix(args.mix)
    if args.rate <= 0 or args.duration <= 0 or args.max_in_flight < 1 or args.timeout <= 0:
        raise Usage("--rate, --duration, --max-in-flight and --timeout must be positive")
    if not 1 <= args.rooms <= args.users or not 0 <= args.syncers <= args.users:
        raise Usage("need 1 <= --rooms <= --users and 0 <= --syncers <= --users")
    if "join" in args.mix and args.rooms < 2:
        raise Usage("join traffic needs at least 2 rooms (users join rooms other than their own)")
    if args.accounts != "register" and not args.secret_file:
        raise Usage(f"--accounts {args.accounts} needs --secret-file")
    try:
        args.server_config = json.loads(args.server_config or "{}")
        args.secret = Path(args.secret_file).read_text().strip() if args.secret_file else ""
    except (OSError, ValueError) as e:
        raise Usage(f"--server-config or --secret-file: {e}") from None
    if args.accounts == "login" and not args.user_prefix:
        raise Usage("--accounts login needs --user-prefix (accounts PREFIX0 .. PREFIXn-1 must exist)")
    args.user_prefix = args.user_prefix or f"profile{secrets.token_hex(3)}_"
    return Thresholds(
        error_rate=parse_pairs(args.max_error_rate, THRESHOLD_KEYS, "--max-error-rate"),
        p95_ms=parse_pairs(args.p95_ms, THRESHOLD_KEYS, "--p95-ms"),
        p99_ms=parse_pairs(args.p99_ms, THRESHOLD_KEYS, "--p99-ms"),
        min_rate=args.min_rate,
        allow_refusals=args.allow_refusals,
    )


def profile(args: argparse.Namespace) -> int:
    """Set up, run the traffic, print the table; the exit status."""
    lt = helpers()
    try:
        limits = check(args)
        lt.raise_own_fd_limit()
        with contextlib.ExitStack() as stack:
            if args.spawn:
                fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
                target = stack.enter_context(lt.spawned_server(fd_limit, args.server_config, args.keep))
                url, args.server_pid = target.base_url, target.pid
            else:
                lt.parse_base_url(args.base_url)
                url = args.base_url.rstrip("/")
            print(f"profiling {url} ...", file=sys.stderr, flush=True)
            report = build_report(args, url, asyncio.run(run_profile(args, url)))
    except Usage as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # from loadtest.py: a malformed --base-url, or a spawned server that did not start
        if not isinstance(e.code, str):
            raise
        print(f"error: {e.code}", file=sys.stderr)
        return EXIT_USAGE
    failed = failures(report, limits)
    report["failures"] = failed
    report["verdict"] = "FAIL" if failed else "PASS"
    print_report(report, failed)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return EXIT_FAIL if failed else EXIT_PASS


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the `profile` subcommand on scripts/loadtest.py's subparsers."""
    p = sub.add_parser("profile", help="a steady traffic mix at a target rate, with pass/fail thresholds",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--spawn", action="store_true", help="start a server of this tree (SQLite, temp dir)")
    where.add_argument("--base-url", help="a running server, e.g. http://127.0.0.1:8008 (127.0.0.1 only)")
    p.add_argument("--server-pid", type=int, help="the running server's pid, to report its CPU use")
    p.add_argument("--server-config", help="JSON object merged into a spawned server's config")
    p.add_argument("--keep", action="store_true", help="keep a spawned server's directory (config, log, db)")
    p.add_argument("--rate", type=float, default=20, help="operations started per second (default 20)")
    p.add_argument("--duration", type=float, default=60, help="seconds of traffic (default 60)")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"relative weights of the operations (default {DEFAULT_MIX})")
    p.add_argument("--users", type=int, default=20, help="accounts (default 20)")
    p.add_argument("--rooms", type=int, default=4, help="rooms; user i lives in room i %% rooms (default 4)")
    p.add_argument("--syncers", type=int, default=8, help="users long-polling /sync all the time (default 8)")
    p.add_argument("--max-in-flight", type=int, default=100, help="operations in flight at most (default 100)")
    p.add_argument("--timeout", type=float, default=10, help="an operation fails after this many seconds (10)")
    p.add_argument("--long-poll-timeout", type=int, default=30_000, help="timeout of the long-polls, ms (30000)")
    p.add_argument("--drain", type=float, default=5, help="seconds to wait for deliveries after the traffic (5)")
    p.add_argument("--accounts", choices=("register", "shared-secret", "login"), default="register",
                   help="register (m.login.dummy), shared-secret (registration_shared_secret in --secret-file), "
                   "login (existing accounts PREFIX0.., password in --secret-file)")  # fmt: skip
    p.add_argument("--user-prefix", help="localpart prefix of the accounts (default: profile<random>_)")
    p.add_argument("--secret-file", help="file holding the shared secret or the accounts' password")
    p.add_argument("--max-error-rate", default="0.001", help="errors/count allowed per row, e.g. 0.001,join=0.01")
    p.add_argument("--p95-ms", default="500", help="p95 latency limit per row, e.g. 500,delivery=1000 (500)")
    p.add_argument("--p99-ms", default="1000", help="p99 latency limit per row (1000)")
    p.add_argument("--min-rate", type=float, default=0.95, help="share of the target rate that must be issued")
    p.add_argument("--allow-refusals", action="store_true", help="429/503 refusals are not errors")
    p.add_argument("--seed", type=int, default=1, help="seed of the operation mix (default 1)")
    p.add_argument("--json", help="also write the report here")
    p.set_defaults(run=profile)
    return p

#!/usr/bin/env python3
"""The thundering herd (DESIGN.md, failure 1): K clients do a full initial /sync of one M-member room at once.

    .venv/bin/python scripts/loadtest.py herd --spawn both            # ours, then Synapse, fresh PostgreSQL databases
    .venv/bin/python scripts/loadtest.py herd --base-url http://127.0.0.1:8008 --server-pid 1234

It registers M users (m.login.dummy, at most --concurrency requests in flight), the first creates a public
room, the others join it, and --messages messages are sent into it round-robin over the first users. Then,
for each mode (naive: no filter; lazy: `{"room":{"state":{"lazy_load_members":true}}}`), the first K
members each send `GET /_matrix/client/v3/sync` (no since, `Accept-Encoding: gzip`, a fresh connection) at
the same moment (released together by an asyncio event, in a child process), while from this process a
canary (a separate user, not in the room) sends `GET /_matrix/client/versions` and `whoami` alternately every
100 ms on fresh connections, before (idle), during and after the herd, and the server's RSS, descriptors and
CPU time are read from /proc/PID every 100 ms.

A herd client that is refused with 429 or 503 waits its Retry-After (or retry_after_ms) and tries again, as
Matrix clients must, at most --retries times; those refusals are reported apart. An error is a client that
did not get its 200 in the end (any other status, a connection error, or no answer within --timeout s).
Recovery is as in the admission test: from the last herd answer to the first run of 5 consecutive canary
probes that all got 200 with a median within twice the idle median.

--spawn starts the server(s) on fresh PostgreSQL databases (as bench/state_storage.py does: ours with
registration open, bcrypt_rounds 4 and relaxed login/registration limits; Synapse from its own virtualenv on
its generated config with every rate limit raised) and drops them afterwards. Needs aiohttp (and psycopg2 and
pyyaml for --spawn), all in the project's .venv.
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLIENT = "/_matrix/client/v3"
LAZY_FILTER = json.dumps({"room": {"state": {"lazy_load_members": True}}}, separators=(",", ":"))
MODES = {"naive": None, "lazy": LAZY_FILTER}
REFUSED = (429, 503)
MAX_SAMPLES = 100_000  # every loop is bounded in count as well as in time
TARGETS = {"naive_speedup": 20.0, "lazy_speedup": 10.0, "canary_p99_ms": 100.0, "recovery_s": 1.0}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def helpers() -> Any:
    """scripts/loadtest.py, for the canary, recovery and percentiles shared with the admission test (imported
    late: loadtest.py imports this module)."""
    main = sys.modules.get("__main__")
    if Path(getattr(main, "__file__", "") or "").name == "loadtest.py":
        return main  # run as `scripts/loadtest.py herd`: the module is already loaded, as __main__
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import loadtest

    return loadtest


def bench_module() -> Any:
    """bench/state_storage.py: its set-up client, and how it spawns both servers on fresh PostgreSQL databases."""
    sys.path.insert(0, str(ROOT))
    from bench import state_storage

    return state_storage


# -- building the room ------------------------------------------------------------------------------------


@dataclass
class Room:
    room_id: str
    tokens: list[str]  # of the members, the creator first
    canary_token: str
    timings: dict[str, float] = field(default_factory=dict)
    setup_retries: int = 0


async def build_room(base_url: str, members: int, messages: int, concurrency: int) -> Room:
    """Register, create the room, join everyone, send the messages: bench/state_storage.py's client (retries on
    429/503 and dropped connections, the dummy registration flow of either server)."""
    import aiohttp

    bench = bench_module()

    prefix = f"herd{secrets.token_hex(3)}_"
    password = secrets.token_hex(12)
    timings = {}
    connector = aiohttp.TCPConnector(limit=concurrency + 2)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), connector=connector) as session:
        client = bench.Client(session, base_url, bench.Stats())
        start = time.monotonic()
        jobs = [client.register(f"{prefix}{i:05d}", password) for i in range(members)]
        tokens = await bench.bounded(concurrency, jobs, "register")
        canary_token = await client.register(f"{prefix}canary", password)
        timings["register"] = time.monotonic() - start
        start = time.monotonic()
        room = {"preset": "public_chat", "visibility": "public", "name": "thundering herd"}
        _, created = await client.call("POST", f"{CLIENT}/createRoom", room, token=tokens[0])
        room_id = created["room_id"]
        quoted = urllib.parse.quote(room_id, safe="")
        joins = [client.call("POST", f"{CLIENT}/join/{quoted}", {}, token=t) for t in tokens[1:]]
        await bench.bounded(concurrency, joins, "join")
        timings["createRoom + join"] = time.monotonic() - start
        start = time.monotonic()
        for n in range(messages):  # one after the other: a realistic timeline, in order
            body = {"msgtype": "m.text", "body": f"message {n} before the herd"}
            path = f"{CLIENT}/rooms/{quoted}/send/m.room.message/herd{n}"
            await client.call("PUT", path, body, token=tokens[n % len(tokens)])
        timings["send"] = time.monotonic() - start
    return Room(room_id, tokens, canary_token, timings, client.stats.retries)


# -- the herd (in a child process, so that reading its answers does not delay the canary) ------------------


@dataclass
class HerdPlan:
    base_url: str
    room_id: str
    tokens: list[str]
    filter: str | None
    start_at: float  # time.monotonic(), the same clock in every process on Linux
    timeout: float
    retries: int


@dataclass
class Answer:
    status: int = 0  # final HTTP status; 0 when there was none
    error: str = ""  # why there was no HTTP answer
    latency: float = 0.0  # from the release to the last byte of the final answer, seconds
    first_byte: float = 0.0  # from the release to the final answer's headers
    connect: float = 0.0  # longest connection set-up of its attempts
    end: float = 0.0  # time.monotonic()
    refusals: list[str] = field(default_factory=list)  # "status errcode: error" of refused attempts, retried
    wire_bytes: int = 0  # body as sent (gzip-compressed when the server compressed it)
    body_bytes: int = 0  # body decompressed
    encoding: str = ""
    state_events: int | None = None  # in the room's `state`, when the answer was a 200 holding the room
    member_events: int | None = None
    timeline_events: int | None = None
    body: bytes = b""  # dropped once measured


def herd_process(plan: HerdPlan, results: Any) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 65536), hard))
    results.put(asyncio.run(fire_herd(plan)))


async def fire_herd(plan: HerdPlan) -> dict[str, Any]:
    import aiohttp

    release = asyncio.Event()
    trace = aiohttp.TraceConfig()

    async def connecting(_session: Any, ctx: Any, _params: Any) -> None:
        ctx.trace_request_ctx["connect_start"] = time.monotonic()

    async def connected(_session: Any, ctx: Any, _params: Any) -> None:
        ctx.trace_request_ctx["connect"] = time.monotonic() - ctx.trace_request_ctx["connect_start"]

    trace.on_connection_create_start.append(connecting)
    trace.on_connection_create_end.append(connected)
    connector = aiohttp.TCPConnector(limit=len(plan.tokens) + 16, limit_per_host=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=plan.timeout)
    params = {"filter": plan.filter} if plan.filter else {}
    url = plan.base_url.rstrip("/") + f"{CLIENT}/sync"
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False, trace_configs=[trace]
    ) as session:

        async def one(token: str) -> Answer:
            answer = Answer()
            headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}
            await release.wait()
            started = time.monotonic()
            try:
                async with asyncio.timeout(plan.timeout):
                    for attempt in range(plan.retries + 1):
                        ctx: dict[str, float] = {}
                        async with session.get(url, params=params, headers=headers, trace_request_ctx=ctx) as resp:
                            answer.first_byte = time.monotonic() - started
                            raw = await resp.read()
                        answer.connect = max(answer.connect, ctx.get("connect", 0.0))
                        if resp.status in REFUSED and attempt < plan.retries:
                            answer.refusals.append(f"{resp.status} {matrix_error(raw)}")
                            await asyncio.sleep(retry_delay(resp.headers.get("Retry-After"), raw))
                            continue
                        answer.status, answer.body = resp.status, raw
                        answer.encoding = resp.headers.get("Content-Encoding", "")
                        break
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                answer.error = type(e).__name__
            answer.end = time.monotonic()
            answer.latency = answer.end - started
            return answer

        tasks = [asyncio.create_task(one(t)) for t in plan.tokens]
        await asyncio.sleep(max(0.0, plan.start_at - time.monotonic()))
        released = time.monotonic()
        release.set()
        answers = await asyncio.gather(*tasks)
    for answer in answers:  # after the herd: decompressing and parsing are not part of what is timed
        inspect_body(answer, plan.room_id)
    return {"released": released, "ended": max(a.end for a in answers), "answers": [asdict(a) for a in answers]}


def matrix_error(raw: bytes) -> str:
    """`errcode: error` of a Matrix error body (gzipped or not), for counting refusals by their reason."""
    with contextlib.suppress(ValueError, TypeError, AttributeError, zlib.error):
        data = json.loads(zlib.decompress(raw, 16 + zlib.MAX_WBITS) if raw[:2] == b"\x1f\x8b" else raw)
        return f"{data.get('errcode')}: {str(data.get('error'))[:80]}"
    return raw[:80].decode("utf-8", "replace")


def retry_delay(header: str | None, raw: bytes) -> float:
    with contextlib.suppress(ValueError, TypeError, AttributeError, zlib.error):
        data = zlib.decompress(raw, 16 + zlib.MAX_WBITS) if raw[:2] == b"\x1f\x8b" else raw
        return min(max(json.loads(data)["retry_after_ms"] / 1000, 0.05), 30)
    with contextlib.suppress(ValueError, TypeError):
        return min(max(float(header), 0.05), 30)
    return 1.0


def inspect_body(answer: Answer, room_id: str) -> None:
    raw, answer.body = answer.body, b""
    answer.wire_bytes = len(raw)
    try:
        data = zlib.decompress(raw, 16 + zlib.MAX_WBITS) if "gzip" in answer.encoding else raw
    except zlib.error:
        answer.error = "bad gzip"
        return
    answer.body_bytes = len(data)
    if answer.status != 200:
        answer.error = f"{answer.status} {matrix_error(data)}"
        return
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        room = json.loads(data)["rooms"]["join"][room_id]
        state = room["state"]["events"]
        answer.state_events = len(state)
        answer.member_events = sum(1 for e in state if e.get("type") == "m.room.member")
        answer.timeline_events = len(room["timeline"]["events"])


# -- watching the server while the herd runs --------------------------------------------------------------


@dataclass
class Sample:
    at: float
    rss: int  # bytes
    fds: int
    cpu: float  # seconds of CPU used so far


def read_sample(pid: int) -> Sample | None:
    lt = helpers()
    try:
        rss_kb = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
    except (OSError, AttributeError):
        return None
    fds, cpu = lt.open_fds(pid), lt.cpu_seconds(pid)
    return None if fds is None or cpu is None else Sample(time.monotonic(), rss_kb * 1024, fds, cpu)


def peak_rss(pid: int) -> int | None:
    """The kernel's high-water mark of the process's resident memory (VmHWM), bytes, since it started."""
    with contextlib.suppress(OSError, AttributeError):
        return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024
    return None


async def sample_server(pid: int | None, interval: float, until: Callable[[], bool]) -> list[Sample]:
    samples: list[Sample] = []
    for _ in range(MAX_SAMPLES):
        if pid is None or until():
            break
        sample = read_sample(pid)
        if sample is not None:
            samples.append(sample)
        await asyncio.sleep(interval)
    return samples


def server_health(base_url: str) -> dict | None:
    """Our /health (its sync counters); None from a server whose /health is not JSON (Synapse: "OK")."""
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(base_url + "/health", timeout=5) as resp:
        answer = json.loads(resp.read())
        return answer if isinstance(answer, dict) else None
    return None


async def watch(args: argparse.Namespace, target: Any, token: str, plan: HerdPlan, queue: Any, child: Any) -> tuple:
    """Canary and sampler from `args.idle` s before the herd until `args.after` s after its last answer."""
    lt = helpers()
    loop = asyncio.get_running_loop()
    herd: dict[str, Any] = {}
    hard_stop = plan.start_at + plan.timeout + args.after + 120

    def done() -> bool:
        now = time.monotonic()
        gone = not herd and not child.is_alive() and queue.empty()
        return now > hard_stop or gone or (bool(herd) and now >= herd["ended"] + args.after)

    def receive() -> dict | None:
        with contextlib.suppress(Exception):
            return queue.get(timeout=0.5)
        return None

    async def collect() -> None:
        while not herd and time.monotonic() < hard_stop and (child.is_alive() or not queue.empty()):
            got = await loop.run_in_executor(None, receive)
            if got is not None:
                herd.update(got)

    collector = asyncio.create_task(collect())
    canary = asyncio.create_task(lt.run_canary(target, token, args.canary_interval, done, args.canary_timeout))
    sampler = asyncio.create_task(sample_server(target.pid, args.sample_interval, done))
    probes, samples = await asyncio.gather(canary, sampler)
    await collector
    return probes, samples, herd


def run_phase(args: argparse.Namespace, target: Any, room: Room, mode: str) -> dict[str, Any]:
    lt = helpers()
    plan = HerdPlan(
        base_url=target.base_url,
        room_id=room.room_id,
        tokens=room.tokens[: args.clients],
        filter=MODES[mode],
        start_at=time.monotonic() + args.idle + 1.0,  # the child needs a moment to start
        timeout=args.timeout,
        retries=args.retries,
    )
    health_before = server_health(target.base_url)
    pressure_before, load_before = lt.cpu_pressure(), os.getloadavg()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=herd_process, args=(plan, queue), daemon=True)
    child.start()
    try:
        probes, samples, herd = asyncio.run(watch(args, target, room.canary_token, plan, queue, child))
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    if not herd:
        raise SystemExit(f"the {mode} herd process reported nothing (exit code {child.exitcode})")
    report = summarize(args, mode, plan, herd, probes, samples)
    report["cpu_pressure_pct_before"], report["load_average_before"] = (
        pressure_before,
        [round(x, 2) for x in load_before],
    )
    health_after = server_health(target.base_url)
    if health_before and health_after and "sync" in health_after:
        before, after = health_before.get("sync", {}), health_after["sync"]
        counted = ("computed", "coalesced", "room_states_built", "room_sections_built")
        report["server_sync_counters"] = {
            k: after[k] - before.get(k, 0) if k in counted else after[k] for k in after
        }
        report["server_admission"] = health_after.get("admission")
    return report


# -- the report --------------------------------------------------------------------------------------------


def summarize(
    args: argparse.Namespace, mode: str, plan: HerdPlan, herd: dict, probes: list, samples: list[Sample]
) -> dict[str, Any]:
    lt = helpers()
    answers = [Answer(**a) for a in herd["answers"]]
    released, ended = herd["released"], herd["ended"]
    ok = [a for a in answers if a.status == 200 and not a.error]
    outcomes = Counter(str(a.status) if a.status and not a.error else (a.error or "no answer") for a in answers)
    latencies = [a.latency * 1000 for a in ok]
    idle = lt.Phase("idle", [p for p in probes if p.started < released])
    during = lt.Phase("herd", [p for p in probes if released <= p.started < ended])
    after = lt.Phase("after", [p for p in probes if p.started >= ended])
    idle_ok = [p.latency * 1000 for p in idle.probes if p.status == 200]
    threshold = 2 * (lt.percentile(idle_ok, 50) or 0)
    recovery = lt.recovery_time(probes, ended, threshold, args.recovery_run)
    herd_samples = [s for s in samples if released <= s.at <= ended + args.after]
    idle_samples = [s for s in samples if s.at < released]
    cpu_during = [s for s in samples if released <= s.at <= ended]

    def stat(values: list[int | None], fn: Callable) -> Any:
        present = [v for v in values if v is not None]
        return fn(present) if present else None

    return {
        "mode": mode,
        "filter": plan.filter,
        "clients": len(plan.tokens),
        "wall_s": round(ended - released, 3),
        "latency_ms": {f"p{q}": _r(lt.percentile(latencies, q)) for q in (50, 95, 99)}
        | {"max": _r(max(latencies, default=None))},
        "first_byte_ms_p50": _r(lt.percentile([a.first_byte * 1000 for a in ok], 50)),
        "ok": len(ok),
        "errors": len(answers) - len(ok),
        "outcomes": dict(outcomes),
        "refusals_retried": dict(Counter(s for a in answers for s in a.refusals)),
        "clients_refused_at_least_once": sum(1 for a in answers if a.refusals),
        "connect_ms_max": _r(max((a.connect * 1000 for a in answers), default=None)),
        "connects_over_1s": sum(1 for a in answers if a.connect >= 1.0),
        "wire_bytes": sum(a.wire_bytes for a in ok),
        "body_bytes": sum(a.body_bytes for a in ok),
        "encodings": dict(Counter(a.encoding or "identity" for a in ok)),
        "state_events": [stat([a.state_events for a in ok], min), stat([a.state_events for a in ok], max)],
        "member_events": [stat([a.member_events for a in ok], min), stat([a.member_events for a in ok], max)],
        "timeline_events": [stat([a.timeline_events for a in ok], min), stat([a.timeline_events for a in ok], max)],
        "answers_without_the_room": sum(1 for a in ok if a.state_events is None),
        "canary": {"idle": idle.summary(), "herd": during.summary(), "after": after.summary()},
        "canary_herd_by_path": {path: lt.Phase(path, [p for p in during.probes if p.path == path]).summary()
                                for path in sorted({p.path for p in during.probes})},
        "recovery": {"threshold_ms": _r(threshold), "run_length": args.recovery_run,
                     "seconds": None if recovery is None else round(recovery, 3), "watched_s": args.after},
        "server": {
            "rss_idle_mb": _mb(max((s.rss for s in idle_samples), default=None)),
            "rss_peak_mb": _mb(max((s.rss for s in herd_samples), default=None)),
            "fds_idle": max((s.fds for s in idle_samples), default=None),
            "fds_peak": max((s.fds for s in herd_samples), default=None),
            "cpu_s_during_herd": round(cpu_during[-1].cpu - cpu_during[0].cpu, 2) if len(cpu_during) > 1 else None,
            "samples": len(samples),
        },
    }  # fmt: skip


def _by_status(reasons: dict[str, int]) -> str:
    """{"503 M_LIMIT_EXCEEDED: ...": n, ...} -> "n x 503", the reasons summed by status."""
    counts: Counter = Counter()
    for reason, n in reasons.items():
        counts[reason.split()[0]] += n
    return ", ".join(f"{n} x {status}" for status, n in sorted(counts.items())) or "none"


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 1024 / 1024, 1)


def print_phase(name: str, r: dict[str, Any]) -> None:
    lat, can, srv = r["latency_ms"], r["canary"], r["server"]
    print(f"  {name} {r['mode']} herd ({r['clients']} clients): wall {r['wall_s']} s; latency p50/p95/p99/max "
          f"{lat['p50']}/{lat['p95']}/{lat['p99']}/{lat['max']} ms; {r['ok']} ok, {r['errors']} errors "
          f"{r['outcomes']}; refused and retried {r['refusals_retried']} ({r['clients_refused_at_least_once']} "
          f"clients); connect max {r['connect_ms_max']} ms ({r['connects_over_1s']} over 1 s)")  # fmt: skip
    print(f"    bytes: {r['wire_bytes']:,} on the wire ({r['encodings']}), {r['body_bytes']:,} decompressed; "
          f"state events per answer {r['state_events']} (members {r['member_events']}), timeline "
          f"{r['timeline_events']}, answers without the room {r['answers_without_the_room']}")  # fmt: skip
    for phase in ("idle", "herd", "after"):
        c = can[phase]
        print(f"    canary {phase:5} {c['ok']}/{c['requests']} ok {c['statuses']}  p50 {c['p50_ms']} p99 "
              f"{c['p99_ms']} max {c['max_ms']} ms (p99 incl. failures {c['p99_all_ms']} ms)")  # fmt: skip
    for path, c in r["canary_herd_by_path"].items():
        print(f"      herd {path}: {c['ok']}/{c['requests']} ok {c['statuses']} p50 {c['p50_ms']} p99 {c['p99_ms']} ms")
    rec = r["recovery"]
    print(f"    recovery {rec['seconds']} s (threshold {rec['threshold_ms']} ms, watched {rec['watched_s']} s); server "
          f"RSS {srv['rss_idle_mb']} -> peak {srv['rss_peak_mb']} MB, fds {srv['fds_idle']} -> peak "
          f"{srv['fds_peak']}, CPU {srv['cpu_s_during_herd']} s during the herd; load before "
          f"{r['load_average_before']}, PSI {r['cpu_pressure_pct_before']}")  # fmt: skip
    if r.get("server_sync_counters"):
        print(f"    server /health sync: {r['server_sync_counters']}")


def verdict(servers: dict[str, dict]) -> dict[str, Any]:
    """Targets of the issue, for ours against Synapse when both ran."""
    ours, synapse = servers.get("ours"), servers.get("synapse")
    out: dict[str, Any] = {}
    if ours is None:
        return out
    phases = ours["phases"]
    for mode, key in (("naive", "naive_speedup"), ("lazy", "lazy_speedup")):
        if synapse and mode in phases and mode in synapse["phases"]:
            ratio = synapse["phases"][mode]["wall_s"] / max(phases[mode]["wall_s"], 1e-9)
            out[key] = {"ratio": round(ratio, 1), "target": TARGETS[key], "met": ratio >= TARGETS[key]}
    out["zero_errors"] = {m: {"errors": p["errors"], "refused_then_retried": p["clients_refused_at_least_once"],
                              "met": p["errors"] == 0} for m, p in phases.items()}  # fmt: skip
    out["canary_p99_under_100ms"] = {m: {"p99_all_ms": p["canary"]["herd"]["p99_all_ms"],
                                         "met": (p["canary"]["herd"]["p99_all_ms"] or 1e9) < TARGETS["canary_p99_ms"]}
                                     for m, p in phases.items()}  # fmt: skip
    out["recovery_under_1s"] = {
        m: {
            "seconds": p["recovery"]["seconds"],
            "met": p["recovery"]["seconds"] is not None and p["recovery"]["seconds"] < TARGETS["recovery_s"],
        }
        for m, p in phases.items()
    }
    if synapse:
        peak = {k: max(p["server"]["rss_peak_mb"] or 0 for p in s["phases"].values()) for k, s in servers.items()}
        out["peak_rss_below_synapse"] = {"ours_mb": peak["ours"], "synapse_mb": peak["synapse"],
                                         "met": peak["ours"] < peak["synapse"]}  # fmt: skip
    return out


def markdown(servers: dict[str, dict]) -> str:
    """One column per (server, mode), and the Synapse/ours ratio per mode when both ran."""
    kinds = [k for k in ("ours", "synapse") if k in servers]
    modes = [m for m in MODES if any(m in servers[k]["phases"] for k in kinds)]
    cols = [(k, m) for m in modes for k in kinds]
    both = len(kinds) == 2
    head = ["", *(f"{k} {m}" for k, m in cols)] + ([f"Synapse/ours {m}" for m in modes] if both else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label: str, get: Callable[[dict], Any], ratio: bool = False) -> None:
        cells = [label]
        for k, m in cols:
            p = servers[k]["phases"].get(m)
            cells.append("—" if p is None else str(get(p)))
        if both:
            for m in modes:
                o, s = servers["ours"]["phases"].get(m), servers["synapse"]["phases"].get(m)
                value = None
                with contextlib.suppress(TypeError, ZeroDivisionError):
                    value = f"{get(s, raw=True) / get(o, raw=True):.1f}x" if ratio and o and s else None
                cells.append(value or "")
        lines.append("| " + " | ".join(cells) + " |")

    def num(path: Callable[[dict], Any], fmt: str) -> Callable:
        def get(p: dict, raw: bool = False) -> Any:
            v = path(p)
            return v if raw else ("—" if v is None else format(v, fmt))

        return get

    def canary(p: dict, raw: bool = False) -> str:
        c = p["canary"]["herd"]
        return f"{c['p50_ms']} / {c['p99_all_ms']} / {c['max_ms']} ms ({c['ok']}/{c['requests']} ok)"

    row("herd wall time", num(lambda p: p["wall_s"], ",.2f"), ratio=True)
    for q in ("p50", "p95", "p99"):
        row(f"herd latency {q} (ms)", num(lambda p, q=q: p["latency_ms"][q], ",.0f"), ratio=True)
    row(
        "200 / errors (by status)",
        lambda p, raw=False: f"{p['ok']} / {p['errors']} {p['outcomes'] if p['errors'] else ''}".strip(),
    )
    row(
        "refused, retried after Retry-After",
        lambda p, raw=False: f"{p['clients_refused_at_least_once']} clients, {_by_status(p['refusals_retried'])}",
    )
    row("bytes on the wire, all answers (MB)", num(lambda p: p["wire_bytes"] / 1e6, ",.1f"), ratio=True)
    row("bytes decompressed, all answers (MB)", num(lambda p: p["body_bytes"] / 1e6, ",.1f"))
    row("state events per answer (members)", lambda p, raw=False: f"{p['state_events'][1]} ({p['member_events'][1]})")
    row("canary during herd p50 / p99 (failures incl.) / max", canary)
    row(
        "canary idle p50 / p99 (ms)",
        lambda p, raw=False: f"{p['canary']['idle']['p50_ms']} / {p['canary']['idle']['p99_ms']}",
    )
    row(
        "recovery to idle latency (s)",
        lambda p, raw=False: (
            p["recovery"]["seconds"] if p["recovery"]["seconds"] is not None else f"> {p['recovery']['watched_s']}"
        ),
    )
    row("server peak RSS (MB)", num(lambda p: p["server"]["rss_peak_mb"], ",.0f"), ratio=True)
    row("server RSS before the herd (MB)", num(lambda p: p["server"]["rss_idle_mb"], ",.0f"))
    row("server peak open fds", num(lambda p: p["server"]["fds_peak"], "d"))
    row("server CPU during the herd (s)", num(lambda p: p["server"]["cpu_s_during_herd"], ",.1f"), ratio=True)
    return "\n".join(lines)  # fmt: skip


# -- servers --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def spawned(kind: str, args: argparse.Namespace) -> Iterator[Any]:
    """Our server or Synapse on a fresh PostgreSQL database (dropped afterwards), as bench/state_storage.py does."""
    bench, lt = bench_module(), helpers()
    db_name = f"herd_{kind}_{secrets.token_hex(4)}"
    directory = Path(tempfile.mkdtemp(prefix=f"herd-{kind}-"))
    port = bench.free_port()
    try:
        with bench.fresh_database(args.pg_url, db_name, args.keep) as dsn:
            if kind == "ours":
                config = bench.ours_config(directory, dsn, port)
                command = [args.ours_python, "-m", "homeserver", "run", "-c", str(config)]
                env = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
                cwd, version = ROOT, "ours, " + git_version()
            else:
                config = bench.synapse_config(directory, dsn, port, args.synapse_python)
                command = [args.synapse_python, "-m", "synapse.app.homeserver", "-c", str(config)]
                env, cwd = dict(os.environ), directory
                version = "Synapse " + bench.synapse_version(args.synapse_python)
            log_path = directory / "stdout.log"
            log(f"{kind}: starting on port {port}, database {db_name}, files in {directory}")
            with log_path.open("ab") as out:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
            try:
                bench.wait_healthy(process, f"http://127.0.0.1:{port}", log_path, timeout=300)
                target = lt.Target("127.0.0.1", port, process.pid, log_path)
                target.version = version  # type: ignore[attr-defined]
                yield target
            finally:
                bench.stop(process)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


def git_version() -> str:
    with contextlib.suppress(Exception):
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
        return f"commit {head}" + (" + uncommitted changes" if dirty.stdout.strip() else "")
    return "unknown version"


def run_server(args: argparse.Namespace, kind: str, target: Any) -> dict[str, Any]:
    log(f"{kind}: building the room: {args.members} members, {args.messages} messages")
    room = asyncio.run(build_room(target.base_url, args.members, args.messages, args.concurrency))
    log(f"{kind}: room built: " + ", ".join(f"{k} {v:.0f} s" for k, v in room.timings.items()))
    result: dict[str, Any] = {"version": getattr(target, "version", None), "pid": target.pid, "room_id": room.room_id,
                              "room_build_s": {k: round(v, 1) for k, v in room.timings.items()},
                              "setup_retries": room.setup_retries, "phases": {}}  # fmt: skip
    for mode in args.modes.split(","):
        log(f"{kind}: {mode} herd of {args.clients} clients")
        result["phases"][mode] = run_phase(args, target, room, mode)
        print_phase(kind, result["phases"][mode])
    if target.pid:
        result["rss_high_water_mb"] = _mb(peak_rss(target.pid))  # since the process started, room build included
    return result


def herd(args: argparse.Namespace) -> int:
    lt = helpers()
    with contextlib.suppress(ImportError):
        import aiohttp  # noqa: F401
    if "aiohttp" not in sys.modules:
        raise SystemExit("the herd test needs aiohttp: run it with the project's .venv")
    if args.base_url and not args.base_url.startswith(("http://127.0.0.1", "http://localhost")):
        raise SystemExit("this load test only talks to 127.0.0.1")
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown or args.clients > args.members:
        raise SystemExit(f"unknown modes {sorted(unknown)}" if unknown else "--clients must not exceed --members")
    lt.raise_own_fd_limit()
    servers: dict[str, dict] = {}
    started = time.time()
    if args.spawn:
        for kind in ["ours", "synapse"] if args.spawn == "both" else [args.spawn]:
            with spawned(kind, args) as target:
                servers[kind] = run_server(args, kind, target)
    else:
        host, port = lt.parse_base_url(args.base_url)
        target = lt.Target(host, port, args.server_pid)
        servers[args.kind] = run_server(args, args.kind, target)
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "minutes": round((time.time() - started) / 60, 1),
        "machine": lt.machine_description(),
        "members": args.members, "clients": args.clients, "messages": args.messages,
        "servers": servers,
        "verdict": verdict(servers),
    }  # fmt: skip
    print(f"\n{report['started']}, {report['minutes']} min; {report['machine']}\ncommand: {report['command']}")
    print(f"{args.clients} clients x {args.members} members, {args.messages} messages; " + "; ".join(
        f"{k}: {s['version']}, room build {s['room_build_s']}, RSS high-water {s.get('rss_high_water_mb')} MB"
        for k, s in servers.items()))  # fmt: skip
    print("\n" + markdown(servers) + "\n")
    for name, value in report["verdict"].items():
        print(f"target {name}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if all(_met(v) for v in report["verdict"].values()) else 1


def _met(value: Any) -> bool:
    if isinstance(value, dict) and "met" in value:
        return bool(value["met"])
    return all(_met(v) for v in value.values()) if isinstance(value, dict) else True


# -- command line ---------------------------------------------------------------------------------------------


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the `herd` subcommand on scripts/loadtest.py's subparsers."""
    p = sub.add_parser("herd", help="K clients do a full initial /sync of one M-member room at once, with a canary",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--spawn", choices=("ours", "synapse", "both"), help="start server(s) on fresh PostgreSQL DBs")
    where.add_argument("--base-url", help="a running server, e.g. http://127.0.0.1:8008 (127.0.0.1 only)")
    p.add_argument("--server-pid", type=int, help="the running server's pid, for its RSS, descriptors and CPU")
    p.add_argument("--kind", default="server", help="the running server's name in the report (default: server)")
    p.add_argument("--members", type=int, default=2000, help="room members, all registered here (default 2000)")
    p.add_argument("--clients", type=int, default=300, help="herd clients, the first members (default 300)")
    p.add_argument("--messages", type=int, default=20, help="messages sent into the room first (default 20)")
    p.add_argument("--modes", default="naive,lazy", help="herds to run, in order: naive (no filter), lazy")
    p.add_argument("--concurrency", type=int, default=20, help="requests in flight while building the room")
    p.add_argument("--timeout", type=float, default=300, help="a herd client gives up after this, s (default 300)")
    p.add_argument("--retries", type=int, default=5, help="retries of a herd client refused with 429/503 (default 5)")
    p.add_argument("--idle", type=float, default=5, help="seconds of canary before each herd (default 5)")
    p.add_argument("--after", type=float, default=10, help="seconds of canary after each herd (default 10)")
    p.add_argument("--canary-interval", type=float, default=0.1, help="seconds between canary probes")
    p.add_argument("--canary-timeout", type=float, default=10.0, help="a canary probe fails after this long")
    p.add_argument("--sample-interval", type=float, default=0.1, help="seconds between RSS/fd samples")
    p.add_argument("--recovery-run", type=int, default=5, help="consecutive good probes that mean recovered")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="PostgreSQL for --spawn")
    p.add_argument("--ours-python", default=str(ROOT / ".venv" / "bin" / "python"))
    p.add_argument("--synapse-python", default="/work/synapse-venv/bin/python")
    p.add_argument("--keep", action="store_true", help="keep --spawn's databases and directories")
    p.add_argument("--json", help="also write the report here")
    p.set_defaults(run=herd)
    return p


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parser(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args()
    sys.exit(parsed.run(parsed))

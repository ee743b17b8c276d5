"""The push-action pruner deletes read and expired actions in keyed batches and nothing else; receipts only
move the read position. Driven in-process on both engines (transactions inline)."""

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from homeserver.app import HomeServer
from homeserver.config.options import PushConfig
from homeserver.core.requester import Requester
from homeserver.handlers.batches import Batches, BatchPace
from homeserver.handlers.push_pruner import PushPruner
from homeserver.handlers.room_creation import CreateRoomRequest
from homeserver.storage.database import Txn
from homeserver.storage.push import PRUNE_LOCK
from tests.inline import inline_server, resolve

ALICE, BOB, CAROL = (Requester(f"@{name}:localhost", "DEV") for name in ("alice", "bob", "carol"))
DAY = 86_400.0


async def no_sleep(seconds: float) -> None:
    return None


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hs(database_section: dict[str, Any], tmp_path: Path) -> Iterator[HomeServer]:
    server = inline_server(database_section, tmp_path)
    yield server
    server.db.close()


def pruner(
    hs: HomeServer, batch_size: int = 3, clock: Clock | None = None, sleep: Any = no_sleep, retention_days: float = 30
) -> PushPruner:
    config = dataclasses.replace(PushConfig(), prune_batch_size=batch_size, retention_days=retention_days)
    batches = Batches(hs.db, sleep, BatchPace(batch_size, pause_s=0.0))
    return PushPruner(hs.push_store, batches, config, clock or Clock())


def room_with(hs: HomeServer, *members: Requester) -> str:
    room_id, _ = resolve(hs.room_creation.create_room(ALICE, CreateRoomRequest(preset="public_chat")))
    for member in members:
        resolve(hs.membership.join(member, room_id))
    return room_id


def send(hs: HomeServer, room_id: str, count: int) -> list[str]:
    content = {"msgtype": "m.text", "body": "hi"}
    return [resolve(hs.messages.send(ALICE, room_id, "m.room.message", content, uuid4().hex)) for _ in range(count)]


def read(hs: HomeServer, who: Requester, room_id: str, event_id: str) -> None:
    resolve(hs.receipts.receipt(who, room_id, "m.read", event_id, None))


def actions(hs: HomeServer, who: Requester, room_id: str) -> list[str]:
    """Event ids of the user's push actions in the room, oldest first."""
    rows = hs.db.run_blocking(
        "test.actions",
        lambda txn: txn.execute(
            "SELECT event_id FROM event_push_actions WHERE user_id = ? AND room_id = ? ORDER BY stream_ordering",
            (who.user_id, room_id),
        ).fetchall(),
    )
    return [event_id for (event_id,) in rows]


def counts(hs: HomeServer, who: Requester, room_id: str) -> tuple[int, int]:
    return resolve(hs.push_store.unread_counts(who.user_id)).get(room_id, (0, 0))


def test_the_pruner_deletes_read_actions_and_keeps_unread_ones(hs: HomeServer) -> None:
    room = room_with(hs, BOB, CAROL)
    events = send(hs, room, 10)
    read(hs, BOB, room, events[5])
    totals = resolve(pruner(hs, batch_size=4).run_once())
    assert totals.read_rows == 6 and totals.expired_rows == 0
    assert totals.batches >= 2  # 6 rows in batches of 4
    assert actions(hs, BOB, room) == events[6:]
    assert actions(hs, CAROL, room) == events  # carol read nothing
    assert counts(hs, BOB, room) == (4, 0)
    assert counts(hs, CAROL, room) == (10, 0)


def test_a_receipt_zeroes_the_counts_at_once_and_the_rows_stay_until_the_pruner_runs(hs: HomeServer) -> None:
    room = room_with(hs, BOB)
    events = send(hs, room, 7)
    read(hs, BOB, room, events[-1])
    assert counts(hs, BOB, room) == (0, 0)
    assert actions(hs, BOB, room) == events  # the request deleted nothing
    resolve(pruner(hs).run_once())
    assert actions(hs, BOB, room) == []
    assert counts(hs, BOB, room) == (0, 0)


def test_progress_is_kept_so_a_later_receipt_prunes_only_the_new_read_rows(hs: HomeServer) -> None:
    room = room_with(hs, BOB)
    events = send(hs, room, 6)
    read(hs, BOB, room, events[2])
    prune = pruner(hs)
    assert resolve(prune.run_once()).read_rows == 3
    assert resolve(prune.run_once()).read_rows == 0  # caught up: the summary left the partial index
    read(hs, BOB, room, events[4])
    assert resolve(prune.run_once()).read_rows == 2
    assert actions(hs, BOB, room) == events[5:]


def test_many_summaries_are_pruned_across_batches(hs: HomeServer) -> None:
    rooms = [room_with(hs, BOB, CAROL) for _ in range(3)]
    for room in rooms:
        last = send(hs, room, 5)[-1]
        read(hs, BOB, room, last)
        read(hs, CAROL, room, last)
    totals = resolve(pruner(hs, batch_size=2).run_once())
    assert totals.read_rows == 30
    assert all(actions(hs, who, room) == [] for who in (BOB, CAROL) for room in rooms)


def test_expired_actions_are_deleted_read_or_not_and_the_counts_stay(hs: HomeServer) -> None:
    clock = Clock()
    prune = pruner(hs, clock=clock, retention_days=1)
    room = room_with(hs, BOB)
    old = send(hs, room, 5)
    resolve(prune.run_once())  # marks the stream position now: the five are "received before now"
    clock.now += 3600
    new = send(hs, room, 3)
    clock.now += DAY - 1800  # the old five are a day old, the new three not yet
    totals = resolve(prune.run_once())
    assert totals.expired_rows == 5 and totals.read_rows == 0
    assert actions(hs, BOB, room) == new
    assert counts(hs, BOB, room) == (8, 0)  # unread and expired still count, until a receipt recomputes
    read(hs, BOB, room, new[0])
    assert counts(hs, BOB, room) == (2, 0)
    assert old  # and they were real push actions to begin with


def test_expiry_keeps_everything_received_after_the_newest_mark_before_the_cutoff(hs: HomeServer) -> None:
    clock = Clock()
    prune = pruner(hs, clock=clock, retention_days=1)
    room = room_with(hs, BOB)
    resolve(prune.run_once())  # a mark before any message
    events = send(hs, room, 4)
    clock.now += DAY + 60
    assert resolve(prune.run_once()).expired_rows == 0  # the only mark due says: nothing was received yet
    assert actions(hs, BOB, room) == events
    clock.now += DAY + 60
    assert resolve(prune.run_once()).expired_rows == 4  # the last run's mark is now a day old
    marks = hs.db.run_blocking("test.marks", lambda txn: txn.execute("SELECT ts FROM push_prune_marks").fetchall())
    assert len(marks) == 2  # the one expiry used and the new one; older ones were deleted


def test_one_events_actions_for_more_users_than_a_batch_expire_over_several_batches(hs: HomeServer) -> None:
    clock = Clock()
    prune = pruner(hs, batch_size=2, clock=clock, retention_days=1)
    members = [Requester(f"@member{n}:localhost", "DEV") for n in range(5)]
    room = room_with(hs, *members)
    (event,) = send(hs, room, 1)  # five actions, one stream ordering
    resolve(prune.run_once())
    clock.now += 2 * DAY
    totals = resolve(prune.run_once())
    assert totals.expired_rows == 5 and totals.batches == 3
    assert all(actions(hs, member, room) == [] for member in members)
    assert event


def test_a_second_run_does_not_start_while_one_is_running(hs: HomeServer) -> None:
    room = room_with(hs, BOB)
    read(hs, BOB, room, send(hs, room, 6)[-1])
    pauses: list[defer.Deferred] = []

    def held_sleep(seconds: float) -> defer.Deferred:
        pauses.append(defer.Deferred())
        return pauses[-1]

    prune = pruner(hs, batch_size=2, sleep=held_sleep)
    first = defer.ensureDeferred(prune.run_once())
    assert prune.running and len(pauses) == 1  # paused after its first batch
    assert resolve(prune.run_once()) is None  # refused, did nothing
    assert len(actions(hs, BOB, room)) == 4
    while not first.called:
        pauses.pop().callback(None)
    assert not prune.running
    assert first.result.read_rows == 6 and prune.runs == 1
    assert actions(hs, BOB, room) == []


def test_in_the_server_it_runs_at_once_then_every_interval_until_shutdown(hs: HomeServer) -> None:
    room = room_with(hs, BOB)
    reactor = MemoryReactorClock()
    prune = pruner(hs)
    read(hs, BOB, room, send(hs, room, 2)[-1])
    prune.start(reactor)
    assert prune.runs == 1 and actions(hs, BOB, room) == []
    read(hs, BOB, room, send(hs, room, 2)[-1])
    reactor.advance(PushConfig().prune_interval - 1)
    assert prune.runs == 1  # resting
    reactor.advance(1)
    assert prune.runs == 2 and actions(hs, BOB, room) == []
    assert [trigger for trigger, *_ in reactor.triggers["before"]["shutdown"]] == [prune.stop]
    assert prune.stop() is None  # resting, not in a batch: nothing to wait for
    reactor.advance(10 * PushConfig().prune_interval)
    assert prune.runs == 2


def test_a_pruner_in_another_process_holding_the_lock_stops_this_one(
    hs: HomeServer, database_section: dict[str, Any]
) -> None:
    if database_section["name"] != "psycopg2":
        pytest.skip("the advisory lock is PostgreSQL's; SQLite is one process's file")
    import psycopg2

    room = room_with(hs, BOB)
    read(hs, BOB, room, send(hs, room, 3)[-1])
    other = psycopg2.connect(database_section["args"]["dsn"])
    other.autocommit = True
    prune = pruner(hs)
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (PRUNE_LOCK,))
        totals = resolve(prune.run_once())
        assert totals.locked_out and totals.read_rows == 0
        assert len(actions(hs, BOB, room)) == 3
        assert prune.status()["locked_out_runs"] == 1
    finally:
        other.close()  # ends the session and its lock
    assert resolve(prune.run_once()).read_rows == 3


def test_health_counts_what_the_pruner_did(hs: HomeServer) -> None:
    room = room_with(hs, BOB)
    read(hs, BOB, room, send(hs, room, 5)[-1])
    hs.push_pruner = pruner(hs, batch_size=2)
    resolve(hs.push_pruner.run_once())
    healthy, components = hs.health_status()
    status = components["push_pruner"]
    assert healthy and not status["running"]
    assert status["runs"] == 1 and status["rows_deleted"] == status["read_rows_deleted"] == 5
    assert status["batches"] == 3 and status["last_run_s"] is not None


def test_each_run_counts_the_backlog_it_starts_with(hs: HomeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    prune = pruner(hs, clock=clock, retention_days=1)
    room, other = room_with(hs, BOB, CAROL), room_with(hs, BOB)
    resolve(prune.run_once())
    assert prune.status()["backlog"] == {"read_summaries": 0, "expired_rows": 0}
    read(hs, BOB, room, send(hs, room, 4)[-1])
    read(hs, BOB, other, send(hs, other, 1)[0])
    clock.now += 3600  # far enough from the last mark for this run to mark the stream after the sends
    resolve(prune.run_once())
    assert prune.status()["backlog"] == {"read_summaries": 2, "expired_rows": 0}
    clock.now += 2 * DAY  # Carol never read the four: they are past retention
    resolve(prune.run_once())
    assert prune.status()["backlog"] == {"read_summaries": 0, "expired_rows": 4}
    monkeypatch.setattr("homeserver.storage.push.BACKLOG_CAP", 3)
    read(hs, CAROL, room, send(hs, room, 5)[-1])
    clock.now += 3600
    resolve(prune.run_once())
    clock.now += 2 * DAY
    resolve(prune.run_once())
    assert prune.status()["backlog"] == {"read_summaries": 0, "expired_rows": 3}  # Bob's five, up to the cap
    resolve(prune.run_once())
    assert prune.status()["backlog"] == {"read_summaries": 0, "expired_rows": 0}


# -- every query is an index probe or range ---------------------------------------------------------------

PUSH_TABLES = ("event_push_actions", "push_summary", "push_prune_marks")


def test_the_pruner_and_notifications_never_scan_a_push_table(
    hs: HomeServer, database_section: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    room = room_with(hs, BOB, CAROL)
    prune = pruner(hs, clock=clock, retention_days=1)
    events = send(hs, room, 6)
    resolve(prune.run_once())  # marks the stream position after the six
    read(hs, BOB, room, events[3])
    clock.now += 2 * DAY
    statements: list[tuple[str, tuple]] = []
    execute = Txn.execute

    def recording(txn: Txn, sql: str, args: Any = ()) -> Txn:
        if any(table in sql for table in PUSH_TABLES) and not sql.startswith(("SELECT pg_", "EXPLAIN")):
            statements.append((sql, tuple(args)))
        return execute(txn, sql, args)

    monkeypatch.setattr(Txn, "execute", recording)
    totals = resolve(prune.run_once())
    assert totals.read_rows == 4 and totals.expired_rows == 8
    for only_highlight in (False, True):
        resolve(hs.push_store.notifications(CAROL.user_id, None, 10, only_highlight))
        resolve(hs.push_store.notifications(CAROL.user_id, 10**6, 10, only_highlight))
    monkeypatch.undo()
    assert len(statements) >= 10
    for sql, args in statements:
        plan = explain(hs, database_section["name"], sql, args)
        assert not [line for line in plan if scans_a_push_table(line)], f"{sql}\n" + "\n".join(plan)


def explain(hs: HomeServer, engine: str, sql: str, args: tuple) -> list[str]:
    if engine == "sqlite3":
        rows = hs.db.run_blocking("test.explain", lambda txn: txn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall())
        return [row[-1] for row in rows]

    def plan(txn: Txn) -> list[str]:
        # The tables are tiny, so the planner would rightly read them whole; with sequential scans priced
        # out, a Seq Scan left in the plan means no index can serve the query.
        txn.execute("SET LOCAL enable_seqscan = off")
        return [row[0] for row in txn.execute("EXPLAIN " + sql, args).fetchall()]

    return hs.db.run_blocking("test.explain", plan)


def scans_a_push_table(line: str) -> bool:
    """A whole-table read: SQLite's `SCAN <table>` (not `SEARCH ... USING INDEX`), PostgreSQL's Seq Scan."""
    words = line.replace("->", " ").split()
    for i, word in enumerate(words[:-1]):
        if word == "SCAN" and words[i + 1] in (*PUSH_TABLES, "a", "s") and "USING" not in words[i + 1 :]:
            return True
    return "Seq Scan on" in line and any(f"Seq Scan on {table}" in line for table in PUSH_TABLES)

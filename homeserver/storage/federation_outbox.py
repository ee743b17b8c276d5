"""Outgoing federation: each destination's position in the events stream and its retry state, the durable
EDUs waiting for it, and the reads that find which events and rooms concern a destination."""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Database, Txn
from homeserver.storage.ids import next_id

EDU_STREAM = "federation_outbox_edus"


@dataclass(frozen=True)
class DestinationRecord:
    destination: str
    last_successful_stream: int  # every event up to here that concerned it was delivered (or never will be)
    retry_last_ts: int  # when the last attempt failed (ms); 0 when not backing off
    retry_interval_ms: int  # wait after retry_last_ts before the next attempt; 0 when not backing off
    failure_count: int


@dataclass(frozen=True)
class OutboxEdu:
    stream_id: int
    edu_type: str
    content: dict[str, Any]


@dataclass(frozen=True)
class EventRow:
    stream_ordering: int
    event_id: str
    room_id: str
    state_group: int
    type: str
    state_key: str | None
    sender: str


def server_of(user_id: str) -> str:
    """The server part of a user id (after the first colon: localparts have none)."""
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def _suffix_pattern(destination: str) -> str:
    """A LIKE pattern for the user ids of `destination` (may match more on SQLite, which ignores ASCII case:
    callers compare server_of exactly)."""
    escaped = destination.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "%:" + escaped


class FederationOutboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- destinations -------------------------------------------------------------------------

    async def all_destinations(self) -> list[DestinationRecord]:
        rows = await self._db.run(
            "federation_outbox.all_destinations",
            lambda txn: txn.execute(
                "SELECT destination, last_successful_stream, retry_last_ts, retry_interval_ms, failure_count"
                " FROM federation_destinations ORDER BY destination"
            ).fetchall(),
            readonly=True,
        )
        return [DestinationRecord(*row) for row in rows]

    async def record_success(self, destination: str, position: int, edus_upto: int | None) -> None:
        """A transaction was accepted: the destination is at `position`, its backoff ends, and its durable
        EDUs up to `edus_upto` are gone, all in one transaction."""
        await self._db.run("federation_outbox.record_success", self._success_txn, destination, position, edus_upto)

    def _success_txn(self, txn: Txn, destination: str, position: int, edus_upto: int | None) -> None:
        _upsert_txn(txn, destination, position, 0, 0, 0)
        if edus_upto is not None:
            txn.execute(
                "DELETE FROM federation_outbox_edus WHERE destination = ? AND stream_id <= ?", (destination, edus_upto)
            )

    async def record_failure(self, destination: str, position: int, retry_last_ts: int, retry_interval_ms: int) -> int:
        """A transaction failed: store the backoff (the position too, if the destination is new, so the
        events it is owed are still found after a restart). Returns the failure count."""
        return await self._db.run(
            "federation_outbox.record_failure",
            self._failure_txn,
            destination,
            position,
            retry_last_ts,
            retry_interval_ms,
        )

    def _failure_txn(self, txn: Txn, destination: str, position: int, retry_ts: int, interval_ms: int) -> int:
        row = txn.execute(
            "SELECT last_successful_stream, failure_count FROM federation_destinations WHERE destination = ?",
            (destination,),
        ).fetchone()
        count = (row[1] if row else 0) + 1
        _upsert_txn(txn, destination, row[0] if row else position, retry_ts, interval_ms, count)
        return count

    async def set_position(self, destination: str, position: int) -> None:
        """Move past events that turned out not to concern the destination, leaving its retry state alone."""
        await self._db.run(
            "federation_outbox.set_position",
            lambda txn: txn.execute(
                "INSERT INTO federation_destinations (destination, last_successful_stream) VALUES (?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET last_successful_stream = excluded.last_successful_stream",
                (destination, position),
            ),
        )

    # -- durable EDUs -------------------------------------------------------------------------

    async def add_edus(self, edus: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Queue (destination, edu type, content) rows, in one transaction."""
        if edus:
            await self._db.run("federation_outbox.add_edus", add_outbox_edus_txn, edus)

    async def pending_edus(self, destination: str, limit: int) -> list[OutboxEdu]:
        rows = await self._db.run(
            "federation_outbox.pending_edus",
            lambda txn: txn.execute(
                "SELECT stream_id, edu_type, content FROM federation_outbox_edus WHERE destination = ?"
                " ORDER BY stream_id LIMIT ?",
                (destination, limit),
            ).fetchall(),
            readonly=True,
        )
        return [OutboxEdu(stream_id, edu_type, json.loads(content)) for stream_id, edu_type, content in rows]

    async def pending_edu_counts(self) -> dict[str, int]:
        rows = await self._db.run(
            "federation_outbox.pending_edu_counts",
            lambda txn: txn.execute(
                "SELECT destination, count(*) FROM federation_outbox_edus GROUP BY destination"
            ).fetchall(),
            readonly=True,
        )
        return dict(rows)

    # -- which events concern a destination ---------------------------------------------------

    async def first_membership_stream(self, destination: str) -> int | None:
        """The stream ordering of the first membership event of any of the destination's users: nothing
        before it can concern the destination."""
        rows = await self._db.run(
            "federation_outbox.first_membership",
            lambda txn: txn.execute(
                "SELECT user_id, min(stream_ordering) FROM room_memberships WHERE user_id LIKE ? ESCAPE '\\'"
                " GROUP BY user_id",
                (_suffix_pattern(destination),),
            ).fetchall(),
            readonly=True,
        )
        found = [stream for user_id, stream in rows if server_of(user_id) == destination]
        return min(found) if found else None

    async def rooms_of_destination(self, destination: str, after: int) -> dict[str, list[str]]:
        """room id -> the destination's users that were ever members there, for the rooms where one of them is
        joined now or whose membership changed after `after`: the only rooms with events after `after` that can
        concern the destination. (A user id LIKE scan: fine for a community server's membership table.)"""
        rows = await self._db.run(
            "federation_outbox.rooms_of_destination",
            lambda txn: txn.execute(
                "SELECT m.room_id, m.user_id, max(m.stream_ordering), max(c.membership) FROM room_memberships m"
                " LEFT JOIN current_state c"
                " ON c.room_id = m.room_id AND c.type = 'm.room.member' AND c.state_key = m.user_id"
                " WHERE m.user_id LIKE ? ESCAPE '\\' GROUP BY m.room_id, m.user_id",
                (_suffix_pattern(destination),),
            ).fetchall(),
            readonly=True,
        )
        users: dict[str, list[str]] = {}
        live: set[str] = set()
        for room_id, user_id, last_change, membership in rows:
            if server_of(user_id) != destination:
                continue
            users.setdefault(room_id, []).append(user_id)
            if membership == "join" or last_change > after:
                live.add(room_id)
        return {room_id: sorted(users[room_id]) for room_id in sorted(live)}

    async def members_changed(self, after: int, upto: int) -> set[str]:
        """The users whose membership changed in an event persisted in (after, upto] (a range of the events
        table's primary key)."""
        if after >= upto:
            return set()
        rows = await self._db.run(
            "federation_outbox.members_changed",
            lambda txn: txn.execute(
                "SELECT DISTINCT state_key FROM events"
                " WHERE stream_ordering > ? AND stream_ordering <= ? AND type = 'm.room.member'",
                (after, upto),
            ).fetchall(),
            readonly=True,
        )
        return {row[0] for row in rows}

    async def event_rows(self, room_ids: list[str], after: int, upto: int, limit: int) -> list[EventRow]:
        """Events of `room_ids` persisted in (after, upto], oldest first, at most `limit`."""
        if not room_ids or after >= upto:
            return []
        marks = ",".join("?" * len(room_ids))
        rows = await self._db.run(
            "federation_outbox.event_rows",
            lambda txn: txn.execute(
                "SELECT stream_ordering, event_id, room_id, state_group, type, state_key, sender FROM events"
                f" WHERE room_id IN ({marks}) AND stream_ordering > ? AND stream_ordering <= ?"
                " ORDER BY stream_ordering LIMIT ?",
                (*room_ids, after, upto, limit),
            ).fetchall(),
            readonly=True,
        )
        return [EventRow(*row) for row in rows]

    async def memberships_of(self, event_ids: list[str]) -> dict[str, str]:
        """member event id -> its membership, for the member events among `event_ids`."""
        if not event_ids:
            return {}
        marks = ",".join("?" * len(event_ids))
        rows = await self._db.run(
            "federation_outbox.memberships_of",
            lambda txn: txn.execute(
                f"SELECT event_id, membership FROM room_memberships WHERE event_id IN ({marks})", event_ids
            ).fetchall(),
            readonly=True,
        )
        return dict(rows)

    async def servers_with_joined_members(self) -> set[str]:
        """Every server with a user joined to one of our rooms now (ours included: callers leave it out)."""
        rows = await self._db.run(
            "federation_outbox.joined_servers",
            lambda txn: txn.execute(
                "SELECT DISTINCT state_key FROM current_state WHERE type = 'm.room.member' AND membership = 'join'"
            ).fetchall(),
            readonly=True,
        )
        return {server_of(row[0]) for row in rows}


def add_outbox_edus_txn(txn: Txn, edus: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
    """Queue (destination, edu type, content) rows inside the caller's transaction (the write that
    produced them: a to-device message is stored for local devices and queued for remote ones at once)."""
    for destination, edu_type, content in edus:
        txn.execute(
            "INSERT INTO federation_outbox_edus (stream_id, destination, edu_type, content) VALUES (?, ?, ?, ?)",
            (next_id(txn, EDU_STREAM), destination, edu_type, json.dumps(content, separators=(",", ":"))),
        )


def _upsert_txn(txn: Txn, destination: str, position: int, retry_ts: int, interval_ms: int, failures: int) -> None:
    txn.execute(
        "INSERT INTO federation_destinations"
        " (destination, last_successful_stream, retry_last_ts, retry_interval_ms, failure_count)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
        " last_successful_stream = excluded.last_successful_stream, retry_last_ts = excluded.retry_last_ts,"
        " retry_interval_ms = excluded.retry_interval_ms, failure_count = excluded.failure_count",
        (destination, position, retry_ts, interval_ms, failures),
    )

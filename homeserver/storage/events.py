"""Events: persisting one (with its state group, extremities, current state) in one transaction,
fetching them through a bounded cache, and paging through a room's timeline."""

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from homeserver.core.events import Event
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.storage.database import Database, Txn
from homeserver.storage.ids import current_id, next_id
from homeserver.storage.lru import SizedLru
from homeserver.storage.state import StateKey, StateStore

EVENT_CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Extremity:
    event_id: str
    depth: int
    state_group: int


@dataclass(frozen=True)
class PersistedEvent:
    event: Event
    stream_ordering: int
    state_group: int


@dataclass(frozen=True)
class NewRoom:
    room_id: str
    room_version: str
    creator: str
    is_public: bool
    alias: str | None = None


@dataclass(frozen=True)
class TxnKey:
    user_id: str
    device_id: str
    txn_id: str


class EventStore:
    def __init__(self, db: Database, state: StateStore, cache_bytes: int = EVENT_CACHE_BYTES) -> None:
        self._db = db
        self._state = state
        self._cache: SizedLru[str, Event] = SizedLru(cache_bytes, lambda e: 500 + 2 * len(str(e.content)))
        self.events_loaded = 0  # events read from the database, for tests and metrics

    # -- writing ------------------------------------------------------------------------------

    async def persist(
        self,
        event: Event,
        prev_group: int | None,
        state_delta: dict[StateKey, str] | None,
        txn_key: TxnKey | None = None,
    ) -> PersistedEvent:
        """Store `event` whose room state before it is `prev_group`. A state event passes its
        `state_delta` (a new group is written); any other event reuses `prev_group`."""
        (persisted,) = await self.persist_batch([(event, state_delta)], prev_group, txn_key)
        return persisted

    async def persist_batch(
        self,
        items: list[tuple[Event, dict[StateKey, str] | None]],
        prev_group: int | None,
        txn_key: TxnKey | None = None,
        new_room: NewRoom | None = None,
    ) -> list[PersistedEvent]:
        """Store consecutive events of one room in one transaction, each on the state left by the one
        before (a new room's initial events: the room exists whole or not at all)."""
        persisted = await self._db.run("events.persist", self._persist_txn, items, prev_group, txn_key, new_room)
        for item in persisted:
            self._cache.put(item.event.event_id, item.event)
        return persisted

    def _persist_txn(
        self,
        txn: Txn,
        items: list[tuple[Event, dict[StateKey, str] | None]],
        prev_group: int | None,
        txn_key: TxnKey | None,
        new_room: "NewRoom | None",
    ) -> list[PersistedEvent]:
        if txn_key is not None:
            # A retried send that raced the first one: keep exactly one event per transaction id.
            existing = self._txn_event_id_txn(txn, txn_key)
            if existing is not None:
                raise DuplicateTransaction(existing)
        now = int(time.time() * 1000)
        if new_room is not None:
            txn.execute(
                "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts) VALUES (?, ?, ?, ?, ?)",
                (
                    new_room.room_id,
                    new_room.room_version,
                    new_room.creator,
                    int(new_room.is_public),
                    now,
                ),
            )
            if new_room.alias is not None:
                if txn.execute("SELECT 1 FROM room_aliases WHERE room_alias = ?", (new_room.alias,)).fetchone():
                    raise AliasTaken(new_room.alias)
                txn.execute(
                    "INSERT INTO room_aliases (room_alias, room_id, creator, created_ts) VALUES (?, ?, ?, ?)",
                    (new_room.alias, new_room.room_id, new_room.creator, now),
                )
        done = []
        group = prev_group
        for event, delta in items:
            if delta:
                group = self._state.store_group_txn(txn, event.room_id, group, delta)
            assert group is not None, "an event needs a state group (the create event brings the first)"
            done.append(PersistedEvent(event, self._insert_event_txn(txn, event, group, bool(delta)), group))
        if txn_key is not None:
            txn.execute(
                "INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id, created_ts) VALUES (?, ?, ?, ?, ?)",
                (txn_key.user_id, txn_key.device_id, txn_key.txn_id, items[-1][0].event_id, now),
            )
        return done

    def _insert_event_txn(self, txn: Txn, event: Event, group: int, changes_state: bool) -> int:
        stream = next_id(txn, "events")
        txn.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth,"
            " origin_server_ts, state_group, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stream,
                event.event_id,
                event.room_id,
                event.type,
                event.state_key,
                event.sender,
                event.depth,
                event.origin_server_ts,
                group,
                json.dumps(event.get_pdu_json(), separators=(",", ":")),
            ),
        )
        for prev in event.prev_event_ids:
            txn.execute("DELETE FROM forward_extremities WHERE room_id = ? AND event_id = ?", (event.room_id, prev))
        txn.execute(
            "INSERT INTO forward_extremities (room_id, event_id) VALUES (?, ?)", (event.room_id, event.event_id)
        )
        if changes_state:
            txn.execute(
                "DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
                (event.room_id, event.type, event.state_key),
            )
            txn.execute(
                "INSERT INTO current_state (room_id, type, state_key, event_id, membership) VALUES (?, ?, ?, ?, ?)",
                (event.room_id, event.type, event.state_key, event.event_id, event.membership),
            )
            if event.type == "m.room.member":
                txn.execute(
                    "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership, stream_ordering)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (event.event_id, event.room_id, event.state_key, event.sender, event.membership, stream),
                )
        if event.type == "m.room.redaction" and event.redacts:
            txn.execute("INSERT INTO redactions (event_id, redacts) VALUES (?, ?)", (event.event_id, event.redacts))
        return stream

    # -- reading ------------------------------------------------------------------------------

    async def get_event(self, event_id: str) -> Event | None:
        return (await self.get_events([event_id])).get(event_id)

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, Event]:
        """The events we hold among `event_ids`, through the cache."""
        found: dict[str, Event] = {}
        missing = []
        for event_id in dict.fromkeys(event_ids):
            cached = self._cache.get(event_id)
            if cached is not None:
                found[event_id] = cached
            else:
                missing.append(event_id)
        if missing:
            loaded = await self._db.run("events.get_events", self._load_txn, missing, readonly=True)
            for event in loaded:
                self._cache.put(event.event_id, event)
                found[event.event_id] = event
        return found

    def _load_txn(self, txn: Txn, event_ids: list[str]) -> list[Event]:
        events = []
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = txn.execute(
                f"SELECT e.event_id, e.json, r.room_version FROM events e JOIN rooms r USING (room_id)"
                f" WHERE e.event_id IN ({marks})",
                chunk,
            ).fetchall()
            events += [Event.from_stored(KNOWN_ROOM_VERSIONS[v], json.loads(j), eid) for eid, j, v in rows]
        self.events_loaded += len(events)
        return events

    async def get_state_group_of(self, event_id: str) -> tuple[int, int] | None:
        """(state group after the event, its stream ordering), or None for an unknown event."""
        return await self._db.run(
            "events.state_group_of",
            lambda txn: txn.execute(
                "SELECT state_group, stream_ordering FROM events WHERE event_id = ?", (event_id,)
            ).fetchone(),
            readonly=True,
        )

    async def get_forward_extremities(self, room_id: str) -> list[Extremity]:
        rows = await self._db.run(
            "events.forward_extremities",
            lambda txn: txn.execute(
                "SELECT e.event_id, e.depth, e.state_group FROM forward_extremities f"
                " JOIN events e ON e.event_id = f.event_id WHERE f.room_id = ? ORDER BY e.depth DESC",
                (room_id,),
            ).fetchall(),
            readonly=True,
        )
        return [Extremity(*row) for row in rows]

    async def get_event_id_for_txn(self, key: TxnKey) -> str | None:
        return await self._db.run("events.txn_id", self._txn_event_id_txn, key, readonly=True)

    def _txn_event_id_txn(self, txn: Txn, key: TxnKey) -> str | None:
        row = txn.execute(
            "SELECT event_id FROM event_txn_ids WHERE user_id = ? AND device_id = ? AND txn_id = ?",
            (key.user_id, key.device_id, key.txn_id),
        ).fetchone()
        return row[0] if row else None

    async def get_redactions_of(self, event_ids: Iterable[str]) -> dict[str, str]:
        """For each event among `event_ids` that has been redacted, the id of (one) redaction."""
        ids = list(event_ids)
        if not ids:
            return {}
        return await self._db.run("events.redactions_of", self._redactions_txn, ids, readonly=True)

    def _redactions_txn(self, txn: Txn, ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for redaction, redacts in txn.execute(
                f"SELECT event_id, redacts FROM redactions WHERE redacts IN ({marks}) ORDER BY event_id", chunk
            ).fetchall():
                out.setdefault(redacts, redaction)
        return out

    async def current_stream_ordering(self) -> int:
        return await self._db.run("events.current_stream", lambda txn: current_id(txn, "events"), readonly=True)


class AliasTaken(Exception):
    """A new room's alias was taken between the check and the write."""


class DuplicateTransaction(Exception):
    """The client's transaction id was already used; `event_id` is the event it produced."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id

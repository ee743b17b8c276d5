"""Events: persisting one (with its state group, extremities, current state) in one transaction,
fetching them through a bounded cache, and paging through a room's timeline."""

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from homeserver.core.events import Event
from homeserver.core.filters import RoomEventFilter
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.storage.database import Database, Txn
from homeserver.storage.ids import current_id, next_id
from homeserver.storage.lru import SizedLru
from homeserver.storage.push import PushAction, count_push_actions_txn, record_push_actions_txn
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
class ResolvedState:
    """The state where a room's forked extremities meet, as a delta against one of their groups."""

    base_group: int
    delta: dict[StateKey, str]  # against base_group; empty when the resolution is base_group itself
    current_state: dict[StateKey, str]  # entries the current_state table must take


@dataclass(frozen=True)
class PendingMembership:
    """An invite or knock of our user to a room we do not hold."""

    stripped_state: list[dict]  # the room state its server sent, as the user's /sync shows it
    server_name: str  # the server that holds the room: joins, rejections and rescinds go through it
    event: Event | None = None  # the member event, once stored


@dataclass(frozen=True)
class TxnKey:
    user_id: str
    device_id: str
    scope: str
    txn_id: str


@dataclass(frozen=True, order=True)
class TopologicalPosition:
    """A place in a room's timeline, between two events: just after the event whose (depth, stream
    ordering) this is. The events before it are those whose key is <= (depth, stream)."""

    depth: int
    stream: int


ROOM_START = TopologicalPosition(0, 0)


@dataclass(frozen=True)
class TimelineRow:
    """Where an event sits: its room, its place in topological order and the state group after it."""

    event_id: str
    room_id: str
    depth: int
    stream_ordering: int
    state_group: int

    @property
    def after(self) -> TopologicalPosition:
        return TopologicalPosition(self.depth, self.stream_ordering)

    @property
    def before(self) -> TopologicalPosition:
        # Stream orderings are integers, so nothing sits between (depth, s - 1) and (depth, s).
        return TopologicalPosition(self.depth, self.stream_ordering - 1)


class EventStore:
    def __init__(self, db: Database, state: StateStore, cache_bytes: int = EVENT_CACHE_BYTES) -> None:
        self._db = db
        self._state = state
        self._cache: SizedLru[str, Event] = SizedLru(cache_bytes, lambda e: 500 + 2 * len(str(e.content)))
        self.events_loaded = 0  # events read from the database, for tests and metrics
        self.persisted_count = 0  # events stored by this process, for metrics

    # -- writing ------------------------------------------------------------------------------

    async def persist(
        self,
        event: Event,
        prev_group: int | None,
        state_delta: dict[StateKey, str] | None,
        txn_key: TxnKey | None = None,
        resolved: "ResolvedState | None" = None,
        push_actions: list[PushAction] | None = None,
    ) -> PersistedEvent:
        """Store `event` whose room state before it is `prev_group` (or, after a fork, the `resolved`
        state, written as a new group first). A state event passes its `state_delta` (a new group is
        written); any other event reuses the group before it."""
        (persisted,) = await self.persist_batch(
            [(event, state_delta)], prev_group, txn_key, resolved=resolved, push_actions=push_actions
        )
        return persisted

    async def persist_batch(
        self,
        items: list[tuple[Event, dict[StateKey, str] | None]],
        prev_group: int | None,
        txn_key: TxnKey | None = None,
        new_room: NewRoom | None = None,
        resolved: "ResolvedState | None" = None,
        push_actions: list[PushAction] | None = None,
    ) -> list[PersistedEvent]:
        """Store consecutive events of one room in one transaction, each on the state left by the one
        before (a new room's initial events: the room exists whole or not at all)."""
        persisted = await self._db.run(
            "events.persist", self._persist_txn, items, prev_group, txn_key, new_room, resolved, push_actions or []
        )
        for item in persisted:
            self._cache.put(item.event.event_id, item.event)
        self.persisted_count += len(persisted)
        return persisted

    def _persist_txn(
        self,
        txn: Txn,
        items: list[tuple[Event, dict[StateKey, str] | None]],
        prev_group: int | None,
        txn_key: TxnKey | None,
        new_room: "NewRoom | None",
        resolved: "ResolvedState | None",
        push_actions: list[PushAction],
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
        if push_actions:  # a single new event's, counted in the same transaction that stores it
            count_push_actions_txn(txn, items[-1][0].room_id, push_actions)
        done = []
        group = prev_group
        if resolved is not None:
            room_id = items[0][0].room_id
            group = resolved.base_group  # forks that resolved to a state we hold share its group
            if resolved.delta:
                group = self._state.store_group_txn(txn, room_id, resolved.base_group, resolved.delta)
            for (event_type, state_key), event_id in resolved.current_state.items():
                membership = _membership_txn(txn, event_id)
                self._set_current_state_txn(txn, room_id, event_type, state_key, event_id, membership)
        for event, delta in items:
            if delta:
                group = self._state.store_group_txn(txn, event.room_id, group, delta)
            assert group is not None, "an event needs a state group (the create event brings the first)"
            done.append(PersistedEvent(event, self._insert_event_txn(txn, event, group, bool(delta)), group))
        if push_actions:
            last = done[-1]
            record_push_actions_txn(txn, last.event.room_id, last.event.event_id, last.stream_ordering, push_actions)
        if txn_key is not None:
            txn.execute(
                "INSERT INTO event_txn_ids (user_id, device_id, scope, txn_id, event_id, created_ts)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (txn_key.user_id, txn_key.device_id, txn_key.scope, txn_key.txn_id, items[-1][0].event_id, now),
            )
        return done

    async def persist_remote_join(
        self, room: NewRoom, outliers: list[Event], state: dict[StateKey, str], join: Event
    ) -> PersistedEvent:
        """Our user's join to a room another server holds, with the room's state before it and the auth
        chain (`outliers`: never in a timeline), in one transaction: the room is ours from then on."""
        persisted = await self._db.run("events.persist_remote_join", self._remote_join_txn, room, outliers, state, join)
        self._cache.put(join.event_id, join)
        self.persisted_count += 1
        return persisted

    def _remote_join_txn(
        self, txn: Txn, room: NewRoom, outliers: list[Event], state: dict[StateKey, str], join: Event
    ) -> PersistedEvent:
        if not txn.execute("SELECT 1 FROM rooms WHERE room_id = ?", (room.room_id,)).fetchone():
            txn.execute(
                "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts) VALUES (?, ?, ?, ?, ?)",
                (room.room_id, room.room_version, room.creator, 0, int(time.time() * 1000)),
            )
        self._insert_outliers_txn(txn, outliers)
        by_id = {e.event_id: e for e in outliers}
        group = self._state.store_group_txn(txn, room.room_id, None, state)
        for (event_type, state_key), event_id in state.items():
            membership = by_id[event_id].membership if event_id in by_id else None
            self._set_current_state_txn(txn, room.room_id, event_type, state_key, event_id, membership)
            known = txn.execute("SELECT 1 FROM room_memberships WHERE event_id = ?", (event_id,)).fetchone()
            if membership is not None and not known:  # who is in the room, for the federation sender and sync
                txn.execute(
                    "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership, stream_ordering)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (event_id, room.room_id, state_key, by_id[event_id].sender, membership, next_id(txn, "events")),
                )
        txn.execute(
            "DELETE FROM pending_remote_memberships WHERE room_id = ? AND user_id = ?", (room.room_id, join.state_key)
        )
        txn.execute("DELETE FROM forward_extremities WHERE room_id = ?", (room.room_id,))
        group = self._state.store_group_txn(
            txn, room.room_id, group, {("m.room.member", join.state_key): join.event_id}
        )
        return PersistedEvent(join, self._insert_event_txn(txn, join, group, True), group)

    async def persist_remote_membership(self, event: Event, pending: "PendingMembership | None") -> None:
        """Our user's membership in a room we do not hold: an invite or knock (`pending`, kept until they
        join or leave) sets it, so their /sync shows it; a leave (rejected, rescinded) clears it."""
        await self._db.run("events.persist_remote_membership", self._remote_membership_txn, event, pending)

    def _remote_membership_txn(self, txn: Txn, event: Event, pending: "PendingMembership | None") -> None:
        if pending is not None:
            self._set_current_state_txn(
                txn, event.room_id, event.type, event.state_key, event.event_id, event.membership
            )
        else:  # we hold nothing of the room, so the user has no membership here any more
            txn.execute(
                "DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
                (event.room_id, event.type, event.state_key),
            )
        txn.execute(
            "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership, stream_ordering)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (event.event_id, event.room_id, event.state_key, event.sender, event.membership, next_id(txn, "events")),
        )
        txn.execute(
            "DELETE FROM pending_remote_memberships WHERE room_id = ? AND user_id = ?", (event.room_id, event.state_key)
        )
        if pending is not None:
            txn.execute(
                "INSERT INTO pending_remote_memberships"
                " (room_id, user_id, event_id, room_version, event_json, stripped_state, server_name)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.room_id,
                    event.state_key,
                    event.event_id,
                    event.room_version.identifier,
                    json.dumps(event.get_pdu_json(), separators=(",", ":")),
                    json.dumps(pending.stripped_state),
                    pending.server_name,
                ),
            )

    def _insert_outliers_txn(self, txn: Txn, events: list[Event]) -> None:
        for event in events:
            known = txn.execute("SELECT 1 FROM events WHERE event_id = ?", (event.event_id,)).fetchone()
            if known or txn.execute("SELECT 1 FROM event_outliers WHERE event_id = ?", (event.event_id,)).fetchone():
                continue
            self._insert_outlier_txn(txn, event, "outlier", None, None)

    async def pending_remote_membership(self, room_id: str, user_id: str) -> "PendingMembership | None":
        """Our user's invite to, or knock on, a room we do not hold, if they have one."""
        row = await self._db.run(
            "events.pending_remote_membership",
            lambda txn: txn.execute(
                "SELECT event_id, room_version, event_json, stripped_state, server_name FROM pending_remote_memberships"
                " WHERE room_id = ? AND user_id = ?",
                (room_id, user_id),
            ).fetchone(),
            readonly=True,
        )
        if row is None:
            return None
        event_id, version, event_json, stripped, server_name = row
        event = Event.from_stored(KNOWN_ROOM_VERSIONS[version], json.loads(event_json), event_id)
        return PendingMembership(json.loads(stripped), server_name, event)

    def _insert_event_txn(
        self, txn: Txn, event: Event, group: int, changes_state: bool, backfilled: bool = False
    ) -> int:
        # Backfilled history counts down from 0: it sorts before everything a sync has sent, so no
        # incremental sync reports old events as new, and it leaves the extremities and current state be.
        stream = -next_id(txn, "backfill") if backfilled else next_id(txn, "events")
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
        if not backfilled:
            for prev in event.prev_event_ids:
                txn.execute("DELETE FROM forward_extremities WHERE room_id = ? AND event_id = ?", (event.room_id, prev))
            txn.execute(
                "INSERT INTO forward_extremities (room_id, event_id) VALUES (?, ?)", (event.room_id, event.event_id)
            )
        if changes_state:
            if not backfilled:
                self._set_current_state_txn(
                    txn, event.room_id, event.type, event.state_key, event.event_id, event.membership
                )
            if event.type == "m.room.member":
                txn.execute(
                    "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership, stream_ordering)"
                    # A remote room's members were recorded when we joined it; backfill brings their events.
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                    (event.event_id, event.room_id, event.state_key, event.sender, event.membership, stream),
                )
        if event.type == "m.room.redaction" and event.redacts:
            txn.execute("INSERT INTO redactions (event_id, redacts) VALUES (?, ?)", (event.event_id, event.redacts))
        return stream

    def _set_current_state_txn(
        self, txn: Txn, room_id: str, event_type: str, state_key: str, event_id: str, membership: str | None
    ) -> None:
        txn.execute(
            "DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
            (room_id, event_type, state_key),
        )
        txn.execute(
            "INSERT INTO current_state (room_id, type, state_key, event_id, membership) VALUES (?, ?, ?, ?, ?)",
            (room_id, event_type, state_key, event_id, membership),
        )

    # -- received over federation -------------------------------------------------------------

    async def persist_received(
        self,
        event: Event,
        base_group: int | None,
        before_delta: dict[StateKey, str],
        *,
        soft_failed: bool = False,
        current_state: dict[StateKey, str] | None = None,
        push_actions: list[PushAction] | None = None,
        backfilled: bool = False,
    ) -> PersistedEvent | None:
        """Store a received event whose state before it is `base_group` + `before_delta`.

        A soft-failed event goes to event_outliers with the state after it (None is returned); any
        other joins the timeline. `current_state`, when given, is the room's whole new current state
        (its extremities were resolved); otherwise the event's own entry is what changes. A `backfilled`
        event is older history: it changes neither the extremities nor the current state."""
        persisted = await self._db.run(
            "events.persist_received",
            self._persist_received_txn,
            event,
            base_group,
            before_delta,
            soft_failed,
            current_state,
            push_actions or [],
            backfilled,
        )
        self._cache.put(event.event_id, event)
        if persisted is not None:
            self.persisted_count += 1
        return persisted

    def _persist_received_txn(
        self,
        txn: Txn,
        event: Event,
        base_group: int | None,
        before_delta: dict[StateKey, str],
        soft_failed: bool,
        current_state: dict[StateKey, str] | None,
        push_actions: list[PushAction],
        backfilled: bool,
    ) -> PersistedEvent | None:
        group = base_group
        if before_delta or group is None:
            group = self._state.store_group_txn(txn, event.room_id, base_group, before_delta)
        if event.is_state():
            group = self._state.store_group_txn(
                txn, event.room_id, group, {(event.type, event.state_key): event.event_id}
            )
        # It may have been held as an outlier (fetched as state or auth of another event).
        txn.execute("DELETE FROM event_outliers WHERE event_id = ?", (event.event_id,))
        if soft_failed:
            self._insert_outlier_txn(txn, event, "soft_failed", None, group)
            return None
        stream = self._insert_event_txn(txn, event, group, event.is_state(), backfilled)
        if current_state is not None:
            rows = txn.execute(
                "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?", (event.room_id,)
            ).fetchall()
            now = {(t, k): e for t, k, e in rows}
            for (event_type, state_key), event_id in current_state.items():
                if now.get((event_type, state_key)) != event_id:
                    membership = _membership_txn(txn, event_id)
                    self._set_current_state_txn(txn, event.room_id, event_type, state_key, event_id, membership)
            for event_type, state_key in now.keys() - current_state.keys():
                txn.execute(
                    "DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
                    (event.room_id, event_type, state_key),
                )
        if push_actions:
            count_push_actions_txn(txn, event.room_id, push_actions)
            record_push_actions_txn(txn, event.room_id, event.event_id, stream, push_actions)
        return PersistedEvent(event, stream, group)

    async def store_outliers(self, events: list[Event], rejected: dict[str, str]) -> None:
        """Keep events fetched to check others (state, auth chains), and the reasons of those rejected."""
        await self._db.run("events.store_outliers", self._store_outliers_txn, events, rejected)

    def _store_outliers_txn(self, txn: Txn, events: list[Event], rejected: dict[str, str]) -> None:
        for event in events:
            if txn.execute("SELECT 1 FROM events WHERE event_id = ?", (event.event_id,)).fetchone():
                continue
            txn.execute("DELETE FROM event_outliers WHERE event_id = ?", (event.event_id,))
            reason = rejected.get(event.event_id)
            self._insert_outlier_txn(txn, event, "rejected" if reason else "outlier", reason, None)

    def _insert_outlier_txn(self, txn: Txn, event: Event, kind: str, reason: str | None, group: int | None) -> None:
        txn.execute(
            "INSERT INTO event_outliers (event_id, room_id, kind, reason, state_group, received_ts, json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.event_id,
                event.room_id,
                kind,
                reason,
                group,
                int(time.time() * 1000),
                json.dumps(event.get_pdu_json(), separators=(",", ":")),
            ),
        )

    async def oldest_event(self, room_id: str) -> tuple[str, str] | None:
        """(event id, type) of the room's topologically first event we hold in its timeline."""
        return await self._db.run(
            "events.oldest",
            lambda txn: txn.execute(
                "SELECT event_id, type FROM events WHERE room_id = ? ORDER BY depth, stream_ordering LIMIT 1",
                (room_id,),
            ).fetchone(),
            readonly=True,
        )

    async def received_status(self, event_ids: Iterable[str]) -> dict[str, tuple[str, int | None]]:
        """For each known event among `event_ids`: its kind (timeline, outlier, soft_failed, rejected)
        and the state group after it (None for outliers and rejected events)."""
        ids = list(dict.fromkeys(event_ids))
        return await self._db.run("events.received_status", self._received_status_txn, ids, readonly=True)

    def _received_status_txn(self, txn: Txn, ids: list[str]) -> dict[str, tuple[str, int | None]]:
        out: dict[str, tuple[str, int | None]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for kind, event_id, group in txn.execute(
                f"SELECT kind, event_id, state_group FROM event_outliers WHERE event_id IN ({marks})"
                f" UNION ALL SELECT 'timeline', event_id, state_group FROM events WHERE event_id IN ({marks})",
                chunk + chunk,
            ).fetchall():
                out[event_id] = (kind, group)
        return out

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
        found = {e.event_id for e in events}
        rest = [event_id for event_id in event_ids if event_id not in found]
        for start in range(0, len(rest), 500):  # outliers and soft-failed events; never rejected ones
            chunk = rest[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = txn.execute(
                f"SELECT o.event_id, o.json, r.room_version FROM event_outliers o JOIN rooms r USING (room_id)"
                f" WHERE o.event_id IN ({marks}) AND o.kind <> 'rejected'",
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
            "SELECT event_id FROM event_txn_ids WHERE user_id = ? AND device_id = ? AND scope = ? AND txn_id = ?",
            (key.user_id, key.device_id, key.scope, key.txn_id),
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

    async def stream_positions(self) -> dict[str, int]:
        """The current position of every stream counter (events, receipts, to_device, ...)."""
        rows = await self._db.run(
            "events.stream_positions",
            lambda txn: txn.execute("SELECT name, value FROM stream_counters").fetchall(),
            readonly=True,
        )
        return {name: int(value) for name, value in rows}

    async def current_stream_ordering(self) -> int:
        return await self._db.run("events.current_stream", lambda txn: current_id(txn, "events"), readonly=True)

    # -- the timeline in topological order ----------------------------------------------------

    async def timeline_page(
        self,
        room_id: str,
        lower: TopologicalPosition | None,
        upper: TopologicalPosition | None,
        backwards: bool,
        limit: int,
        event_filter: RoomEventFilter | None = None,
    ) -> list[TimelineRow]:
        """Up to `limit` events after `lower` and up to `upper` (None: no bound), newest first when
        `backwards`, oldest first otherwise."""
        sql = f"SELECT {_ROW_COLUMNS} FROM events WHERE room_id = ?"
        args: list = [room_id]
        if lower is not None:
            sql += " AND depth >= ? AND (depth > ? OR stream_ordering > ?)"
            args += [lower.depth, lower.depth, lower.stream]
        if upper is not None:
            sql += " AND depth <= ? AND (depth < ? OR stream_ordering <= ?)"
            args += [upper.depth, upper.depth, upper.stream]
        filter_sql, filter_args = _timeline_filter_sql(event_filter)
        order = "DESC" if backwards else "ASC"
        sql += f"{filter_sql} ORDER BY depth {order}, stream_ordering {order} LIMIT ?"
        return await _timeline_rows(self._db, "events.timeline_page", sql, [*args, *filter_args, limit])

    async def timeline_rows(self, event_ids: Iterable[str]) -> dict[str, TimelineRow]:
        """The timeline place of each known event among `event_ids`."""
        ids = list(dict.fromkeys(event_ids))
        found: dict[str, TimelineRow] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            sql = f"SELECT {_ROW_COLUMNS} FROM events WHERE event_id IN ({','.join('?' * len(chunk))})"
            for row in await _timeline_rows(self._db, "events.timeline_rows", sql, chunk):
                found[row.event_id] = row
        return found

    async def timeline_last_at(self, room_id: str, position: TopologicalPosition | None) -> TimelineRow | None:
        """The last event of the room at or before `position` (None: the room's newest event)."""
        rows = await self.timeline_page(room_id, None, position, backwards=True, limit=1)
        return rows[0] if rows else None

    async def timeline_last_at_stream(self, room_id: str, stream_ordering: int) -> TimelineRow | None:
        """The room's last event persisted at or before a stream position (a sync token's)."""
        rows = await _timeline_rows(
            self._db,
            "events.timeline_last_at_stream",
            f"SELECT {_ROW_COLUMNS} FROM events WHERE room_id = ? AND stream_ordering <= ?"
            " ORDER BY stream_ordering DESC LIMIT 1",
            [room_id, stream_ordering],
        )
        if rows:
            return rows[0]
        return await self._db.run("events.history_start", self._history_start_txn, room_id, readonly=True)

    def _history_start_txn(self, txn: Txn, room_id: str) -> TimelineRow | None:
        """Where our history of a room joined through another server begins: just before its first event
        here (our join), with the room state the resident server sent (the group the join's builds on).
        None for a room whose history starts at its create event."""
        first = txn.execute(
            "SELECT e.type, e.depth, e.stream_ordering, g.prev_group FROM events e"
            " JOIN state_groups g ON g.id = e.state_group WHERE e.room_id = ? ORDER BY e.stream_ordering LIMIT 1",
            (room_id,),
        ).fetchone()
        if first is None or first[0] == "m.room.create" or first[3] is None:
            return None
        event_type, depth, stream, state_group = first
        return TimelineRow("", room_id, depth - 1, stream - 1, state_group)

    # -- the timeline in stream order (sync) ---------------------------------------------------

    async def stream_rows(self, room_id: str, after: int, upto: int, limit: int) -> list[TimelineRow]:
        """The room's events persisted after `after` and up to `upto`, newest first, at most `limit`."""
        return await _timeline_rows(
            self._db,
            "events.stream_rows",
            f"SELECT {_ROW_COLUMNS} FROM events WHERE room_id = ? AND stream_ordering > ? AND stream_ordering <= ?"
            " ORDER BY stream_ordering DESC LIMIT ?",
            [room_id, after, upto, limit],
        )

    async def rooms_with_events(self, room_ids: list[str], after: int, upto: int) -> set[str]:
        """Which of `room_ids` had an event persisted in (after, upto]."""
        if not room_ids or after >= upto:
            return set()
        found: set[str] = set()
        for start in range(0, len(room_ids), 500):
            chunk = room_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._db.run(
                "events.rooms_with_events",
                lambda txn, chunk=chunk, marks=marks: txn.execute(
                    f"SELECT DISTINCT room_id FROM events WHERE room_id IN ({marks})"
                    " AND stream_ordering > ? AND stream_ordering <= ?",
                    [*chunk, after, upto],
                ).fetchall(),
                readonly=True,
            )
            found.update(r[0] for r in rows)
        return found


class AliasTaken(Exception):
    """A new room's alias was taken between the check and the write."""


class DuplicateTransaction(Exception):
    """The client's transaction id was already used; `event_id` is the event it produced."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


_ROW_COLUMNS = "event_id, room_id, depth, stream_ordering, state_group"


def _membership_txn(txn: Txn, event_id: str) -> str | None:
    """`content.membership` of a stored event; state can be an outlier (fetched when the room had a gap)."""
    row = txn.execute("SELECT json FROM events WHERE event_id = ?", (event_id,)).fetchone()
    if row is None:
        row = txn.execute("SELECT json FROM event_outliers WHERE event_id = ?", (event_id,)).fetchone()
    membership = json.loads(row[0]).get("content", {}).get("membership") if row else None
    return membership if isinstance(membership, str) else None


def _timeline_filter_sql(event_filter: RoomEventFilter | None) -> tuple[str, list]:
    """SQL that narrows a page to the filter's types and senders. It may let through more than the
    filter (SQLite's LIKE ignores ASCII case; `not_types` globs are left out), never less: callers
    still apply `event_filter.matches` to what comes back."""
    if event_filter is None:
        return "", []
    clauses, args = [], []
    if event_filter.types is not None:
        parts = []
        for pattern in event_filter.types:
            if "*" in pattern:
                escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                parts.append("type LIKE ? ESCAPE '\\'")
                args.append(escaped.replace("*", "%"))
            else:
                parts.append("type = ?")
                args.append(pattern)
        clauses.append("(" + " OR ".join(parts) + ")" if parts else "1 = 0")
    exact_not_types = [t for t in event_filter.not_types if "*" not in t]
    if exact_not_types:
        clauses.append(f"type NOT IN ({','.join('?' * len(exact_not_types))})")
        args += exact_not_types
    if event_filter.senders is not None:
        if event_filter.senders:
            clauses.append(f"sender IN ({','.join('?' * len(event_filter.senders))})")
            args += event_filter.senders
        else:
            clauses.append("1 = 0")
    if event_filter.not_senders:
        clauses.append(f"sender NOT IN ({','.join('?' * len(event_filter.not_senders))})")
        args += event_filter.not_senders
    return "".join(f" AND {c}" for c in clauses), args


async def _timeline_rows(db: Database, name: str, sql: str, args: list) -> list[TimelineRow]:
    rows = await db.run(name, lambda txn: txn.execute(sql, args).fetchall(), readonly=True)
    return [TimelineRow(*row) for row in rows]

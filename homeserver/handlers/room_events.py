"""Building, authorising and persisting a room's new events, one room at a time.

Events of one room are created under that room's lock, so each new event's prev_events is the
room's single forward extremity and the state before it is that extremity's state group. The auth
check loads only the state it needs (create, power levels, the members concerned, join rules).
"""

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.event_auth import auth_types_for_event, check_auth
from homeserver.core.event_builder import build_event
from homeserver.core.events import Event
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.core.state_res import resolve_state
from homeserver.handlers.keyed_lock import KeyedLock
from homeserver.handlers.push import PushActionsBuilder
from homeserver.storage.events import EventStore, PersistedEvent, ResolvedState, TxnKey
from homeserver.storage.push import PushAction
from homeserver.storage.rooms import RoomRecord, RoomStore
from homeserver.storage.state import StateKey, StateStore

MAX_PREV_EVENTS = 10


@dataclass
class DraftState:
    """The state a chain of new events is built on, kept in memory (room creation)."""

    events: dict[StateKey, Event] = field(default_factory=dict)
    prev_event_ids: list[str] = field(default_factory=list)
    depth: int = 0


def _now_ms() -> int:
    return int(time.time() * 1000)


class RoomEventSender:
    def __init__(
        self, server_name: str, signing_key: Any, rooms: RoomStore, events: EventStore, state: StateStore
    ) -> None:
        self.server_name = server_name
        self._signing_key = signing_key
        self._rooms = rooms
        self._events = events
        self._state = state
        self._locks = KeyedLock()
        # Wakes the room members' long-polling syncs once an event is stored (set by the app).
        self.notify_room: Callable[[str], Awaitable[None]] | None = None
        self.push: PushActionsBuilder | None = None  # who an event notifies (set by the app)
        # Told of an event's stored push actions, to wake those users' pushers (set by the app).
        self.pushed: Callable[[list[PushAction]], None] | None = None
        # Told of stored events, to queue them for the other servers in the room (set by the app).
        self.federation: Callable[[str, Sequence[PersistedEvent]], None] | None = None

    def room_lock(self, room_id: str) -> AbstractAsyncContextManager[None]:
        return self._locks.hold(room_id)

    async def get_room(self, room_id: str) -> tuple[RoomRecord, RoomVersion]:
        room = await self._rooms.get_room(room_id)
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        return room, KNOWN_ROOM_VERSIONS[room.room_version]

    async def send(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        redacts: str | None = None,
        txn_key: TxnKey | None = None,
        countersign: Callable[[Event], Awaitable[Event]] | None = None,
    ) -> PersistedEvent:
        """Create, authorise and persist one event; 403 M_FORBIDDEN with the rule's reason if the
        room's auth rules refuse it. `countersign` returns the copy to store (an invite of another
        server's user, signed by that server)."""
        _, room_version = await self.get_room(room_id)
        async with self.room_lock(room_id):
            extremities = (await self._events.get_forward_extremities(room_id))[:MAX_PREV_EVENTS]
            prev_group = extremities[0].state_group
            resolved = None
            if len({e.state_group for e in extremities}) > 1:
                resolved = await self.resolve_fork(room_version, [e.state_group for e in extremities])
            needed = auth_types_for_event(room_version, event_type, state_key, sender, content)
            if resolved is None:
                auth_state = await self.load_state(prev_group, needed)
            else:
                full = {**(await self._state.get_state_ids(prev_group)), **resolved.delta}
                found = await self._events.get_events(full[k] for k in needed if k in full)
                auth_state = {k: found[full[k]] for k in needed if k in full and full[k] in found}
            event = self.build(
                room_version,
                room_id,
                sender,
                event_type,
                content,
                state_key,
                redacts,
                prev_event_ids=[e.event_id for e in extremities],
                depth=max(e.depth for e in extremities) + 1,
                auth_state=auth_state,
            )
            check_auth(room_version, event, auth_state)
            if countersign is not None:
                event = await countersign(event)
            delta = {(event.type, event.state_key): event.event_id} if event.is_state() else None
            push_actions = await self.push.actions_for(room_version, event, auth_state) if self.push else []
            persisted = await self._events.persist(event, prev_group, delta, txn_key, resolved, push_actions)
        if push_actions and self.pushed is not None:
            self.pushed(push_actions)
        await self.persisted(room_id, [persisted])
        return persisted

    async def persisted(self, room_id: str, events: Sequence[PersistedEvent]) -> None:
        if self.federation is not None:
            self.federation(room_id, events)
        if self.notify_room is not None:
            await self.notify_room(room_id)

    async def resolve_fork(self, room_version: RoomVersion, groups: list[int]) -> ResolvedState:
        """State resolution over the states of a room's diverged extremities (two processes, or a
        federated peer, extended the room at once), as a delta against the first one's group."""
        state_sets = [await self._state.get_state_ids(group) for group in dict.fromkeys(groups)]
        known: dict[str, Event] = {}
        wanted = {event_id for state in state_sets for event_id in state.values()}
        while wanted:  # the state events and their whole auth chains
            found = await self._events.get_events(wanted)
            known.update(found)
            wanted = {a for e in found.values() for a in e.auth_event_ids if a not in known}
        resolved = resolve_state(room_version, state_sets, known.get)
        # Whichever branch was stored last set the current state; bring it to the resolution.
        current = {k: v for k, v in resolved.items() if any(state.get(k) != v for state in state_sets)}
        unique_groups = list(dict.fromkeys(groups))
        for group, state in zip(unique_groups, state_sets, strict=True):
            if state == resolved:  # identical snapshots are shared: the resolution is an existing group
                return ResolvedState(group, {}, current)
        base = state_sets[0]
        delta = {k: v for k, v in resolved.items() if base.get(k) != v}
        return ResolvedState(unique_groups[0], delta, current)

    async def load_state(self, group: int, keys: set[StateKey]) -> dict[StateKey, Event]:
        """The events for just these state keys at `group`."""
        ids = await self._state.get_state_ids(group, keys)
        found = await self._events.get_events(ids.values())
        return {key: found[event_id] for key, event_id in ids.items() if event_id in found}

    def build(
        self,
        room_version: RoomVersion,
        room_id: str | None,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None,
        redacts: str | None,
        *,
        prev_event_ids: list[str],
        depth: int,
        auth_state: Mapping[StateKey, Event],
    ) -> Event:
        """A signed event whose auth_events are the spec's selection from `auth_state`."""
        auth_event_ids = [
            e.event_id
            for key, e in auth_state.items()
            if key[0] != "m.room.create" or room_version.create_event_in_auth_events
        ]
        return build_event(
            room_version,
            self.server_name,
            self._signing_key,
            event_type=event_type,
            sender=sender,
            content=content,
            room_id=room_id,
            prev_event_ids=prev_event_ids,
            auth_event_ids=sorted(auth_event_ids),
            depth=depth,
            origin_server_ts=_now_ms(),
            state_key=state_key,
            redacts=redacts,
        )

    def build_on_draft(
        self,
        draft: DraftState,
        room_version: RoomVersion,
        room_id: str | None,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
    ) -> Event:
        """Build and authorise the next event of an in-memory chain (a room being created), and
        advance the draft past it."""
        needed = auth_types_for_event(room_version, event_type, state_key, sender, content)
        auth_state = {key: draft.events[key] for key in needed if key in draft.events}
        event = self.build(
            room_version,
            room_id,
            sender,
            event_type,
            content,
            state_key,
            None,
            prev_event_ids=draft.prev_event_ids,
            depth=draft.depth + 1,
            auth_state=auth_state,
        )
        check_auth(room_version, event, auth_state)
        if event.is_state():
            draft.events[(event.type, event.state_key or "")] = event
        draft.prev_event_ids = [event.event_id]
        draft.depth = event.depth
        return event

"""What other servers may read of a room's history: /event, /state(_ids), /event_auth, /backfill,
/get_missing_events. Only for a server with a member joined to the room; an event's content only
where the room's history visibility lets that server see it (otherwise its redacted form)."""

from collections.abc import Iterable

from homeserver.core.errors import MatrixError
from homeserver.core.event_signing import server_of
from homeserver.core.events import Event
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.core.state_res import resolve_state
from homeserver.storage.events import EventStore
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateKey, StateStore

MAX_BACKFILL = 100
MAX_MISSING_EVENTS = 50


async def resolve_state_sets(
    events: EventStore,
    room_version_id: str,
    state_sets: list[dict[StateKey, str]],
    unstored: Iterable[Event] = (),
) -> dict[StateKey, str]:
    """State resolution over state maps of one room, loading their events' auth chains as it needs them
    (`unstored`: events among them not persisted yet)."""
    if all(s == state_sets[0] for s in state_sets):
        return dict(state_sets[0])
    known: dict[str, Event] = {e.event_id: e for e in unstored}
    wanted = {event_id for state in state_sets for event_id in state.values()} - known.keys()
    wanted |= {a for e in known.values() for a in e.auth_event_ids if a not in known}
    while wanted:  # the state events and their whole auth chains
        found = await events.get_events(wanted)
        if not found:
            break
        known.update(found)
        wanted = {a for e in found.values() for a in e.auth_event_ids if a not in known}
    return dict(resolve_state(KNOWN_ROOM_VERSIONS[room_version_id], state_sets, known.get))


class FederationHistory:
    def __init__(self, events: EventStore, state: StateStore, rooms: RoomStore) -> None:
        self._events = events
        self._state = state
        self._rooms = rooms

    async def require_in_room(self, origin: str, room_id: str) -> None:
        """403 M_FORBIDDEN unless `origin` has a user joined to the room now."""
        members = await self._rooms.member_event_ids(room_id, "join")
        if not any(server_of(user_id) == origin for user_id in members):
            raise MatrixError(403, "M_FORBIDDEN", "Your server is not in this room")

    async def event(self, origin: str, event_id: str) -> dict:
        """GET /event: the PDU, to a server in its room that may see it."""
        event = await self._events.get_event(event_id)
        if event is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown event")
        await self.require_in_room(origin, event.room_id)
        (shaped,) = await self._shape(origin, [event])
        return shaped

    async def state_ids(self, origin: str, room_id: str, event_id: str) -> dict:
        """GET /state_ids: the state before the event, and the auth chain of that state."""
        state = await self._state_before(origin, room_id, event_id)
        chain = await self._auth_chain(state.values())
        return {"pdu_ids": sorted(state.values()), "auth_chain_ids": sorted(e.event_id for e in chain)}

    async def state(self, origin: str, room_id: str, event_id: str) -> dict:
        """GET /state: as /state_ids, with the events themselves."""
        state = await self._state_before(origin, room_id, event_id)
        loaded = await self._events.get_events(state.values())
        chain = await self._auth_chain(state.values())
        return {
            "pdus": [loaded[i].get_pdu_json() for i in state.values() if i in loaded],
            "auth_chain": [e.get_pdu_json() for e in chain],
        }

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> dict:
        """GET /event_auth: the full auth chain of an event."""
        event = await self._room_event(origin, room_id, event_id)
        chain = await self._auth_chain(event.auth_event_ids, include_start=True)
        return {"auth_chain": [e.get_pdu_json() for e in chain]}

    async def backfill(self, origin: str, room_id: str, from_ids: list[str], limit: int) -> list[dict]:
        """GET /backfill: up to `limit` events from `from_ids` backwards over prev_events (the
        starting events included), newest first."""
        await self.require_in_room(origin, room_id)
        found = await self._walk_back(room_id, from_ids, set(), min(max(limit, 0), MAX_BACKFILL), include_start=True)
        return await self._shape(origin, sorted(found, key=lambda e: e.depth, reverse=True))

    async def missing_events(
        self, origin: str, room_id: str, earliest: list[str], latest: list[str], limit: int, min_depth: int
    ) -> list[dict]:
        """POST /get_missing_events: the events before `latest` that are not `earliest` nor before
        them, at depth >= min_depth, at most `limit`, oldest first."""
        await self.require_in_room(origin, room_id)
        limit = min(max(limit, 0), MAX_MISSING_EVENTS)
        found = await self._walk_back(room_id, latest, set(earliest), limit, include_start=False)
        found = [e for e in found if e.depth >= min_depth]
        return await self._shape(origin, sorted(found, key=lambda e: e.depth))

    # -- helpers -----------------------------------------------------------------------------------

    async def _room_event(self, origin: str, room_id: str, event_id: str) -> Event:
        await self.require_in_room(origin, room_id)
        event = await self._events.get_event(event_id)
        if event is None or event.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown event in this room")
        return event

    async def _state_before(self, origin: str, room_id: str, event_id: str) -> dict[StateKey, str]:
        event = await self._room_event(origin, room_id, event_id)
        status = await self._events.received_status([event_id, *event.prev_event_ids])
        if status.get(event_id, ("?", None))[0] not in ("timeline", "soft_failed"):
            raise MatrixError(404, "M_NOT_FOUND", "No state is known at this event")
        if not event.is_state():  # a non-state event shares the group of the state before it
            group = status[event_id][1]
            assert group is not None
            return await self._state.get_state_ids(group)
        groups = [g for p in event.prev_event_ids if (g := status.get(p, ("?", None))[1]) is not None]
        if not groups:  # the room's first event
            return {}
        room = await self._rooms.get_room(room_id)
        assert room is not None
        state_sets = [await self._state.get_state_ids(g) for g in dict.fromkeys(groups)]
        return await resolve_state_sets(self._events, room.room_version, state_sets)

    async def _auth_chain(self, event_ids: Iterable[str], include_start: bool = False) -> list[Event]:
        """The auth events of `event_ids`, theirs, and so on (with the events themselves if asked)."""
        chain: dict[str, Event] = {}
        start = await self._events.get_events(event_ids)
        if include_start:
            chain.update(start)
        wanted = {a for e in start.values() for a in e.auth_event_ids} - chain.keys()
        while wanted:
            found = await self._events.get_events(wanted)
            chain.update(found)
            wanted = {a for e in found.values() for a in e.auth_event_ids} - chain.keys()
            if not found:
                break
        return sorted(chain.values(), key=lambda e: e.depth)

    async def _walk_back(
        self, room_id: str, start: list[str], stop: set[str], limit: int, include_start: bool
    ) -> list[Event]:
        """Breadth-first over prev_events from `start`, never past `stop`, at most `limit` events."""
        seen: set[str] = set(stop)
        found: list[Event] = []
        frontier = [i for i in dict.fromkeys(start) if i not in seen]
        if not include_start:
            first = await self._events.get_events(frontier)
            seen.update(frontier)
            frontier = [p for e in first.values() if e.room_id == room_id for p in e.prev_event_ids]
        while frontier and len(found) < limit:
            frontier = [i for i in dict.fromkeys(frontier) if i not in seen]
            seen.update(frontier)
            status = await self._events.received_status(frontier)
            timeline = [i for i in frontier if status.get(i, ("?", None))[0] in ("timeline", "soft_failed")]
            loaded = await self._events.get_events(timeline)
            batch = sorted((e for e in loaded.values() if e.room_id == room_id), key=lambda e: -e.depth)
            found += batch[: limit - len(found)]
            frontier = [p for e in batch for p in e.prev_event_ids]
        return found

    async def _shape(self, origin: str, events: list[Event]) -> list[dict]:
        """PDUs as `origin` may see them: in full where history visibility allows, else redacted."""
        status = await self._events.received_status(e.event_id for e in events)
        out = []
        for event in events:
            group = status.get(event.event_id, ("?", None))[1]
            visible = group is None or await self._server_may_see(origin, group)
            out.append((event if visible else event.pruned()).get_pdu_json())
        return out

    async def _server_may_see(self, origin: str, group: int) -> bool:
        """history visibility for servers: world_readable and shared are seen by any server in the
        room; invited and joined only by servers with a user invited or joined at the time."""
        visibility_id = (await self._state.get_state_ids(group, [("m.room.history_visibility", "")])).get(
            ("m.room.history_visibility", "")
        )
        visibility = "shared"
        if visibility_id is not None:
            event = await self._events.get_event(visibility_id)
            if event is not None and isinstance(event.content.get("history_visibility"), str):
                visibility = event.content["history_visibility"]
        if visibility in ("world_readable", "shared"):
            return True
        members = await self._state.get_state_ids_of_type(group, "m.room.member")
        ours = [event_id for (_, user_id), event_id in members.items() if server_of(user_id) == origin]
        allowed = ("join", "invite") if visibility == "invited" else ("join",)
        return any(e.membership in allowed for e in (await self._events.get_events(ours)).values())

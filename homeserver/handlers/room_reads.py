"""Reading a room: its state, one event, pages of its timeline (/messages), the context of an
event, and its members. Every read goes through history visibility, and events are served in the
client format, redacted ones pruned with the redaction in `unsigned.redacted_because`.

Pagination tokens are opaque to clients: `t{depth}_{stream}` names the place just after the event
with that topological key, and a sync token `s{stream}[_...]` the room as of that stream position.

Lazy loading (`lazy_load_members`) sends the member events of a response's senders every time: the
server keeps no record of what a client already has, which the spec allows ("redundant" members).
"""

import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.core.auth.redactions import redaction_applies
from homeserver.core.errors import MatrixError
from homeserver.core.events import Event
from homeserver.core.filters import RoomEventFilter
from homeserver.core.requester import Requester
from homeserver.handlers.visibility import MEMBER, HistoryVisibility
from homeserver.storage.events import ROOM_START, EventStore, TimelineRow, TopologicalPosition
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateKey, StateStore

MAX_LIMIT = 1000
# The most events one request looks at to fill a page when visibility or the filter hides many;
# past it the page comes back short, with a token to carry on from.
SCAN_LIMIT = 2000
BACKFILL_MIN = 20  # events asked of other servers at least, when a page reaches the start of what we hold
MEMBERSHIPS = frozenset({"join", "invite", "knock", "leave", "ban"})
_AUTH_KEYS: list[StateKey] = [("m.room.power_levels", ""), ("m.room.create", "")]

_TOPOLOGICAL = re.compile(r"t(\d{1,18})_(-?\d{1,18})")  # backfilled events have negative streams
_STREAM = re.compile(r"s(\d{1,18})(?:_.*)?", re.DOTALL)


@dataclass(frozen=True)
class StreamPosition:
    """A sync token's events stream position: the room as it was once that event was persisted."""

    stream: int


Position = TopologicalPosition | StreamPosition


def parse_token(token: str) -> Position:
    """A pagination token: 400 M_INVALID_PARAM if it is not one of ours."""
    if m := _TOPOLOGICAL.fullmatch(token):
        return TopologicalPosition(int(m.group(1)), int(m.group(2)))
    if m := _STREAM.fullmatch(token):
        return StreamPosition(int(m.group(1)))
    raise MatrixError(400, "M_INVALID_PARAM", f"Invalid pagination token {token!r}")


def topological_token(position: TopologicalPosition) -> str:
    return f"t{position.depth}_{position.stream}"


@dataclass(frozen=True)
class Page:
    """Visible events of one scan in scan order, with the state group after each; where the scan
    stopped, and whether it reached the end of its range."""

    items: list[tuple[Event, int]]
    reached: TopologicalPosition
    exhausted: bool

    @property
    def events(self) -> list[Event]:
        return [event for event, _ in self.items]


def _earliest(a: TopologicalPosition | None, b: TopologicalPosition | None) -> TopologicalPosition | None:
    return b if a is None else a if b is None else min(a, b)


class ClientEventSerializer:
    """Events in the client format with `unsigned.age`, a redacted event pruned for its room version
    with the redaction that took effect in `unsigned.redacted_because`."""

    def __init__(self, events: EventStore, state: StateStore, clock: Callable[[], float] = time.time) -> None:
        self._events = events
        self._state = state
        self._clock = clock

    async def serialize(self, events: Sequence[Event]) -> list[dict[str, Any]]:
        redactions = await self._redactions(events)
        now = int(self._clock() * 1000)

        def unsigned(event: Event) -> dict[str, Any]:
            return {"age": max(0, now - event.origin_server_ts)}

        out = []
        for event in events:
            extra = unsigned(event)
            redaction = redactions.get(event.event_id)
            if redaction is not None:
                event = event.pruned()
                extra["redacted_because"] = redaction.to_client_dict(unsigned=unsigned(redaction))
            out.append(event.to_client_dict(unsigned=extra))
        return out

    async def _redactions(self, events: Sequence[Event]) -> dict[str, Event]:
        """The redaction that applies to each redacted event among `events`."""
        redaction_ids = await self._events.get_redactions_of(e.event_id for e in events)
        if not redaction_ids:
            return {}
        found = await self._events.get_events(redaction_ids.values())
        # The redact level and the creators as of each redaction, for redactions across servers.
        rows = await self._events.timeline_rows(found)
        auth_ids: dict[int, dict[StateKey, str]] = {}
        for row in rows.values():
            if row.state_group not in auth_ids:
                auth_ids[row.state_group] = await self._state.get_state_ids(row.state_group, _AUTH_KEYS)
        auth_events = await self._events.get_events(i for ids in auth_ids.values() for i in ids.values())
        applied = {}
        for event in events:
            redaction = found.get(redaction_ids.get(event.event_id, ""))
            row = rows.get(redaction.event_id) if redaction else None
            if redaction is None or row is None:
                continue
            auth_state = {k: auth_events[i] for k, i in auth_ids[row.state_group].items() if i in auth_events}
            if redaction_applies(event.room_version, redaction, event, auth_state):
                applied[event.event_id] = redaction
        return applied


class RoomReadHandler:
    def __init__(
        self, events: EventStore, state: StateStore, rooms: RoomStore, clock: Callable[[], float] = time.time
    ) -> None:
        self._events = events
        self._state = state
        self._rooms = rooms
        self.visibility = HistoryVisibility(events, state, rooms)
        self.serializer = ClientEventSerializer(events, state, clock)
        # Fetches up to n older events of a room from its other servers; how many came (set by the app).
        self.backfill: Callable[[str, int], Awaitable[int]] | None = None

    # -- state --------------------------------------------------------------------------------

    async def state(self, requester: Requester, room_id: str) -> list[dict[str, Any]]:
        """The room's current state, or for a user who left, the state when they left."""
        access = await self.visibility.room_access(requester.user_id, room_id)
        if access.until is None:
            ids = await self._rooms.current_state_map(room_id)
        else:
            ids = await self._state.get_state_ids(access.until.state_group)
        return await self.serializer.serialize(await self._state_events(ids))

    async def state_event(self, requester: Requester, room_id: str, event_type: str, state_key: str) -> dict:
        """One state event in the client format; 404 M_NOT_FOUND when the room has none such."""
        access = await self.visibility.room_access(requester.user_id, room_id)
        if access.until is None:
            event_id = await self._rooms.get_current_state_id(room_id, event_type, state_key)
        else:
            ids = await self._state.get_state_ids(access.until.state_group, [(event_type, state_key)])
            event_id = ids.get((event_type, state_key))
        event = await self._events.get_event(event_id) if event_id else None
        if event is None:
            raise MatrixError(404, "M_NOT_FOUND", "The room has no state with this type and key")
        (served,) = await self.serializer.serialize([event])
        return served

    async def _state_events(self, ids: dict[StateKey, str]) -> list[Event]:
        """The events of a state map, ordered by (type, state_key)."""
        found = await self._events.get_events(ids.values())
        return [found[ids[key]] for key in sorted(ids) if ids[key] in found]

    # -- one event ----------------------------------------------------------------------------

    async def event(self, requester: Requester, room_id: str, event_id: str) -> dict[str, Any]:
        """404 M_NOT_FOUND for an event that is unknown, in another room or hidden from the user."""
        joined = await self.visibility.is_joined(requester.user_id, room_id)
        event, _ = await self._visible_event(requester.user_id, room_id, event_id, joined)
        (served,) = await self.serializer.serialize([event])
        return served

    async def _visible_event(
        self, user_id: str, room_id: str, event_id: str, joined_now: bool
    ) -> tuple[Event, TimelineRow]:
        event = await self._events.get_event(event_id)
        row = (await self._events.timeline_rows([event_id])).get(event_id) if event else None
        if event is None or row is None or event.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        if not await self.visibility.filter_visible(user_id, [(event, row.state_group)], joined_now):
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        return event, row

    # -- the timeline -------------------------------------------------------------------------

    async def messages(
        self,
        requester: Requester,
        room_id: str,
        *,
        from_token: str | None,
        to_token: str | None,
        backwards: bool,
        limit: int,
        event_filter: RoomEventFilter | None,
    ) -> dict[str, Any]:
        """A page of the timeline from `from_token` (default: the end going backwards, the start going
        forwards), stopping at `to_token`; `end` is left out when there is nothing further."""
        start, stop = (parse_token(t) if t else None for t in (from_token, to_token))
        access = await self.visibility.room_access(requester.user_id, room_id)
        cap = access.until.after if access.until else None
        origin = await self._topological(room_id, start) if start else None
        bound = await self._topological(room_id, stop) if stop else None
        if backwards:
            if origin is None:
                newest = await self._events.timeline_last_at(room_id, cap)
                origin = newest.after if newest else ROOM_START
            lower, upper = bound, _earliest(origin, cap)
        else:
            origin = origin or ROOM_START
            lower, upper = origin, _earliest(bound, cap)
        user, joined = requester.user_id, access.joined
        page = await self._scan(user, room_id, joined, lower, upper, backwards, limit, event_filter)
        # At the start of what we hold, older history may be on the room's other servers. After a
        # backfill the page ends with a token even if it still reaches the start: there may be more.
        backfilled = 0
        if backwards and page.exhausted and self.backfill is not None:
            backfilled = await self.backfill(room_id, max(limit, BACKFILL_MIN))
            if backfilled:
                page = await self._scan(user, room_id, joined, lower, upper, backwards, limit, event_filter)
        answer: dict[str, Any] = {
            "start": from_token or topological_token(origin),
            "chunk": await self.serializer.serialize(page.events),
        }
        if not page.exhausted or backfilled:
            answer["end"] = topological_token(page.reached)
        if event_filter and event_filter.lazy_load_members and page.items:
            group = page.items[0][1]
            senders = {event.sender for event in page.events}
            ids = await self._state.get_state_ids(group, [(MEMBER, sender) for sender in sorted(senders)])
            answer["state"] = await self.serializer.serialize(await self._state_events(ids))
        return answer

    async def context(
        self, requester: Requester, room_id: str, event_id: str, limit: int, event_filter: RoomEventFilter | None
    ) -> dict[str, Any]:
        """The event with up to `limit` events around it (half before, the rest after) and the state
        at the last one; the filter applies to all but the event itself."""
        user = requester.user_id
        access = await self.visibility.room_access(user, room_id)
        event, row = await self._visible_event(user, room_id, event_id, access.joined)
        cap = access.until.after if access.until else None
        before = await self._scan(user, room_id, access.joined, None, row.before, True, limit // 2, event_filter)
        after = await self._scan(user, room_id, access.joined, row.after, cap, False, limit - limit // 2, event_filter)
        last_group = after.items[-1][1] if after.items else row.state_group
        ids = await self._state.get_state_ids(last_group)
        if event_filter and event_filter.lazy_load_members:
            senders = {e.sender for e in (*before.events, event, *after.events)}
            ids = {key: i for key, i in ids.items() if key[0] != MEMBER or key[1] in senders}
        state = await self._state_events(ids)
        if event_filter:
            state = event_filter.filter(state)
        return {
            "start": topological_token(before.reached),
            "end": topological_token(after.reached),
            "event": (await self.serializer.serialize([event]))[0],
            "events_before": await self.serializer.serialize(before.events),
            "events_after": await self.serializer.serialize(after.events),
            "state": await self.serializer.serialize(state),
        }

    async def _topological(self, room_id: str, position: Position) -> TopologicalPosition:
        if isinstance(position, TopologicalPosition):
            return position
        row = await self._events.timeline_last_at_stream(room_id, position.stream)
        return row.after if row else ROOM_START

    async def _scan(
        self,
        user_id: str,
        room_id: str,
        joined_now: bool,
        lower: TopologicalPosition | None,
        upper: TopologicalPosition | None,
        backwards: bool,
        limit: int,
        event_filter: RoomEventFilter | None,
    ) -> Page:
        """Up to `limit` events between `lower` (exclusive) and `upper` that pass the filter and that
        the user may see. Pages are read until the limit is met, the range ends, or SCAN_LIMIT events
        have been looked at."""
        found: list[tuple[Event, int]] = []
        scanned = 0
        while True:
            want = limit - len(found)
            rows = await self._events.timeline_page(room_id, lower, upper, backwards, want + 1, event_filter)
            more, rows = len(rows) > want, rows[:want]
            if rows:
                scanned += len(rows)
                if backwards:
                    upper = rows[-1].before
                else:
                    lower = rows[-1].after
                found += await self._visible(user_id, rows, joined_now, event_filter)
            reached = upper if backwards else lower
            if not more or len(found) >= limit or scanned >= SCAN_LIMIT:
                return Page(found, reached or ROOM_START, exhausted=not more)

    async def _visible(
        self, user_id: str, rows: Iterable[TimelineRow], joined_now: bool, event_filter: RoomEventFilter | None
    ) -> list[tuple[Event, int]]:
        rows = list(rows)
        events = await self._events.get_events(row.event_id for row in rows)
        items = [
            (events[row.event_id], row.state_group)
            for row in rows
            if row.event_id in events and (event_filter is None or event_filter.matches(events[row.event_id]))
        ]
        return await self.visibility.filter_visible(user_id, items, joined_now)

    # -- members ------------------------------------------------------------------------------

    async def members(
        self,
        requester: Requester,
        room_id: str,
        at_token: str | None,
        membership: str | None,
        not_membership: str | None,
    ) -> list[dict[str, Any]]:
        """Member events as of `at_token` (default: now, or when a departed user left). With both
        `membership` and `not_membership` a member is kept if either matches, as the spec says."""
        at = parse_token(at_token) if at_token else None
        access = await self.visibility.room_access(requester.user_id, room_id)
        row = access.until
        if at is not None:
            if isinstance(at, StreamPosition):
                found = await self._events.timeline_last_at_stream(room_id, at.stream)
            else:
                found = await self._events.timeline_last_at(room_id, at)
            if found is None:
                return []  # a place before the room began
            if row is None or found.after < row.after:
                row = found  # a departed user sees no further than their leave
        if row is None:
            ids = await self._rooms.current_state_map(room_id, MEMBER)
        else:
            ids = await self._state.get_state_ids_of_type(row.state_group, MEMBER)
        events = await self._state_events(ids)

        def wanted(event: Event) -> bool:
            tests = []
            if membership is not None:
                tests.append(event.membership == membership)
            if not_membership is not None:
                tests.append(event.membership != not_membership)
            return not tests or any(tests)

        return await self.serializer.serialize([e for e in events if wanted(e)])

    async def joined_members(self, requester: Requester, room_id: str) -> dict[str, dict[str, str]]:
        """{user id: {display_name, avatar_url}} of the joined members; 403 unless the requester is one."""
        if not await self.visibility.is_joined(requester.user_id, room_id):
            raise MatrixError(403, "M_FORBIDDEN", "You are not joined to this room")
        ids = await self._rooms.member_event_ids(room_id, "join")
        events = await self._events.get_events(ids.values())
        joined = {}
        for user_id, event_id in sorted(ids.items()):
            content = events[event_id].content if event_id in events else {}
            profile = {"display_name": content.get("displayname"), "avatar_url": content.get("avatar_url")}
            joined[user_id] = {k: v for k, v in profile.items() if isinstance(v, str)}
        return joined

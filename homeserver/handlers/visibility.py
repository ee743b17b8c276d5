"""History visibility (client-server API, "Room History Visibility"): whether a user may read a
room at all, and which of its events they may see.

Whether an event is visible depends on the room's state after it: its m.room.history_visibility
and the user's membership. Events are grouped by state group, and for each group only those two
state entries are read (lazy state), so filtering a page costs a small lookup per distinct group,
never the room's whole state.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from homeserver.core.errors import MatrixError
from homeserver.core.events import Event
from homeserver.storage.events import EventStore, TimelineRow
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateKey, StateStore

HISTORY_VISIBILITY_KEY: StateKey = ("m.room.history_visibility", "")
MEMBER = "m.room.member"

WORLD_READABLE = "world_readable"
SHARED = "shared"
INVITED = "invited"
JOINED = "joined"
_KNOWN = frozenset({WORLD_READABLE, SHARED, INVITED, JOINED})


def visibility_of(event: Event | None) -> str:
    """The history visibility an m.room.history_visibility event sets: `shared` when there is none
    or its value is not understood."""
    value = event.content.get("history_visibility") if event is not None else None
    return value if value in _KNOWN else SHARED


def may_see(event: Event, user_id: str, visibility: str, membership: str | None, joined_now: bool) -> bool:
    """The rules for one event, given the visibility and the user's membership just after it."""
    if visibility == WORLD_READABLE:
        return True
    if event.type == MEMBER and event.state_key == user_id:
        return True  # a user always sees their own membership changes (their leave too)
    if membership == "join":
        return True
    if visibility == SHARED:
        return joined_now  # history is shared with whoever is in the room now
    return visibility == INVITED and membership == "invite"


@dataclass(frozen=True)
class RoomAccess:
    """What a user may read of a room: up to now, or, having left, up to the event that took them out."""

    membership: str | None  # the user's membership now (None: never had one)
    until: TimelineRow | None  # their leave or ban for a departed user; None: up to now

    @property
    def joined(self) -> bool:
        return self.membership == "join"


class HistoryVisibility:
    def __init__(self, events: EventStore, state: StateStore, rooms: RoomStore) -> None:
        self._events = events
        self._state = state
        self._rooms = rooms

    async def room_access(self, user_id: str, room_id: str) -> RoomAccess:
        """A member reads the room up to now; a user who left or was banned (and has not forgotten
        the room) up to that point; anyone else only a world-readable room, else 403 M_FORBIDDEN
        (an unknown room included, so the answer does not tell whether the room exists)."""
        current = await self._rooms.get_membership(room_id, user_id)
        membership = current[0] if current else None
        if membership == "join":
            return RoomAccess(membership, None)
        if current and membership in ("leave", "ban") and not await self._rooms.is_forgotten(user_id, room_id):
            rows = await self._events.timeline_rows([current[1]])
            return RoomAccess(membership, rows[current[1]])
        if await self.current_visibility(room_id) == WORLD_READABLE:
            return RoomAccess(membership, None)
        raise MatrixError(403, "M_FORBIDDEN", "You are not a member of this room")

    async def current_visibility(self, room_id: str) -> str:
        event_id = await self._rooms.get_current_state_id(room_id, *HISTORY_VISIBILITY_KEY)
        return visibility_of(await self._events.get_event(event_id) if event_id else None)

    async def is_joined(self, user_id: str, room_id: str) -> bool:
        current = await self._rooms.get_membership(room_id, user_id)
        return current is not None and current[0] == "join"

    async def filter_visible(
        self, user_id: str, items: Sequence[tuple[Event, int]], joined_now: bool
    ) -> list[tuple[Event, int]]:
        """The items (an event and the state group after it) the user may see, in their order.

        An m.room.history_visibility event is visible if the setting before or after it allows it,
        so one who could see the room before a change sees the change."""
        before = await self._groups_before(event for event, _ in items if event.type == HISTORY_VISIBILITY_KEY[0])
        at = await self._state_at({group for _, group in items} | set(before.values()), user_id)
        visible = []
        for event, group in items:
            visibility, membership = at[group]
            settings = [visibility]
            if event.event_id in before:
                settings.append(at[before[event.event_id]][0])
            if any(may_see(event, user_id, v, membership, joined_now) for v in settings):
                visible.append((event, group))
        return visible

    async def visible_to_every_member(self, groups: Iterable[int]) -> bool:
        """Whether history visibility is `shared` or `world_readable` at each of these state groups. If
        so, a user joined to the room now sees every event after which the state is one of them (see
        may_see: both settings show everything to a current member), whatever their membership was back
        then, and filter_visible(..., joined_now=True) keeps every such event: the check is the same for
        every member and needs no per-user read."""
        ids = {group: await self._state.get_state_ids(group, [HISTORY_VISIBILITY_KEY]) for group in set(groups)}
        events = await self._events.get_events(i for found in ids.values() for i in found.values())
        return all(
            visibility_of(events.get(found.get(HISTORY_VISIBILITY_KEY, ""))) in (SHARED, WORLD_READABLE)
            for found in ids.values()
        )

    async def _groups_before(self, changes: Iterable[Event]) -> dict[str, int]:
        """For history visibility changes (state events), the state group before each: its prev event's."""
        prev = {event.event_id: event.prev_event_ids[0] for event in changes if event.prev_event_ids}
        if not prev:
            return {}
        rows = await self._events.timeline_rows(prev.values())
        return {event_id: rows[p].state_group for event_id, p in prev.items() if p in rows}

    async def _state_at(self, groups: Iterable[int], user_id: str) -> dict[int, tuple[str, str | None]]:
        """(history visibility, the user's membership) at each state group: two state entries each."""
        keys = [HISTORY_VISIBILITY_KEY, (MEMBER, user_id)]
        ids = {group: await self._state.get_state_ids(group, keys) for group in groups}
        events = await self._events.get_events(e for found in ids.values() for e in found.values())
        at = {}
        for group, found in ids.items():
            visibility = visibility_of(events.get(found.get(HISTORY_VISIBILITY_KEY, "")))
            member = events.get(found.get((MEMBER, user_id), ""))
            at[group] = (visibility, member.membership if member else None)
        return at

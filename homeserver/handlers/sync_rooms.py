"""The parts of a room's initial sync that are the same for every member, built once and shared.

A herd of clients re-syncing one big room must not cost a computation each. Shared here, each keyed by
what it depends on and built once however many clients ask together (concurrent misses share one build):

- the room's state at the start of the timeline as the state filter shapes it, serialized and deflated
  (the bulk of a big room's answer): per (room, state group, filter, and for lazy loading the senders);
- the timeline: the room's last events, `limited`, `prev_batch`, where the state starts, and, when
  history visibility hides nothing from a current member, the events the timeline filter passes,
  serialized with their `age` left as holes that each answer fills in: per (room, its last event at the
  sync's position, timeline limit and filter, event format and fields);
- the summary's member counts and hero candidates: per (room, its last event);
- the public receipts: per (room, its last receipt at the sync's position).

What stays per client is what differs between users: unread counts, room account data, private
receipts, heroes (a user is not their own), the ages, and the timeline itself in a room whose history
visibility may hide events from some members (`invited`/`joined` at some event).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.core.events import Event
from homeserver.core.filters import Filter, only_fields
from homeserver.handlers.room_reads import ClientEventSerializer, topological_token
from homeserver.handlers.single_flight import SingleFlight
from homeserver.handlers.turns import Turns
from homeserver.handlers.visibility import HistoryVisibility
from homeserver.http.fragments import Fragment, Hole, Template, json_items
from homeserver.storage.events import EventStore, TimelineRow
from homeserver.storage.lru import SizedLru
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateStore

STATE_FRAGMENT_CACHE_BYTES = 256 * 1024 * 1024
SHARED_SECTION_CACHE_BYTES = 64 * 1024 * 1024
JOINED_CACHE_BYTES = 16 * 1024 * 1024  # rooms' joined members, about 100 bytes a member
MEMBER = "m.room.member"
HERO_COUNT = 5
SERIALIZE_CHUNK = 250  # state events serialized between two turns of the reactor
_EVENT_BYTES = 1000  # rough memory of an Event a cached timeline holds, beyond its serialized form


@dataclass(frozen=True)
class SharedTimeline:
    """An initial sync's timeline of one room, before anything per user."""

    items: tuple[tuple[Event, int], ...]  # the last events (limit), oldest first, with the state group after each
    limited: bool
    prev_batch: str | None
    start: TimelineRow | None  # the event just before the timeline: the state it starts from
    everyone_sees_all: bool  # history visibility hides none of `items` from a member
    events: tuple[Event, ...] = ()  # if everyone_sees_all: what the timeline filter passes
    serialized: Template | None = None  # and serialized, ages as holes (Hole(origin_server_ts))

    @property
    def size(self) -> int:
        return _EVENT_BYTES * len(self.items) + (self.serialized.size if self.serialized else 0)


@dataclass(frozen=True)
class SummaryBase:
    """A room's summary before the user is known: heroes exclude the user, so one more is kept."""

    joined: int
    invited: int
    named: bool  # a name or canonical alias: no heroes needed
    members: tuple[str, ...] = ()  # the first HERO_COUNT + 1 joined or invited users, by id
    former: tuple[str, ...] = ()  # the first HERO_COUNT + 1 who left or were banned, by id

    def for_user(self, user_id: str) -> dict[str, Any]:
        summary: dict[str, Any] = {"m.joined_member_count": self.joined, "m.invited_member_count": self.invited}
        if not self.named:
            heroes = [u for u in self.members if u != user_id][:HERO_COUNT]
            if not heroes:  # everyone else left: name the room after who was there
                heroes = [u for u in self.former if u != user_id][:HERO_COUNT]
            summary["m.heroes"] = heroes
        return summary


@dataclass(frozen=True)
class SharedReceipts:
    content: dict[str, Any]  # of the room's `m.receipt` EDU: every public receipt
    fragment: Fragment  # the same, serialized once


def age_filler(now_ms: int) -> Callable[[Any], int]:
    """Fills a serialized timeline's holes: each is Hole(origin_server_ts), and becomes that event's age."""
    return lambda sent: max(0, now_ms - sent)


class SharedRooms:
    def __init__(
        self,
        events: EventStore,
        state: StateStore,
        rooms: RoomStore,
        visibility: HistoryVisibility,
        serializer: ClientEventSerializer,
        turns: Turns,
        receipts: Any = None,  # receipts_for_rooms(room_ids, after, upto, user_id), or None: no receipts
    ) -> None:
        self._events = events
        self._state = state
        self._rooms = rooms
        self._visibility = visibility
        self._serializer = serializer
        self._turns = turns
        self._receipts = receipts
        self._flights = SingleFlight(keep_s=0.0)
        self.state_fragments: SizedLru[tuple, Fragment] = SizedLru(STATE_FRAGMENT_CACHE_BYTES, lambda f: f.size)
        self.sections: SizedLru[tuple, Any] = SizedLru(SHARED_SECTION_CACHE_BYTES, _size_of)
        self.joined: SizedLru[tuple, frozenset[str]] = SizedLru(JOINED_CACHE_BYTES, lambda users: 100 * len(users))
        self.state_computations = 0  # state fragments built (not served from cache): tests and metrics
        self.section_computations = 0  # timelines, summaries and receipts built: tests and metrics

    async def _shared(self, cache: SizedLru, key: tuple, build: Callable[[], Any]) -> Any:
        cached = cache.get(key)
        if cached is not None:
            return cached
        # Clients of a herd arrive together, before the first has filled the cache: they share one build.
        return await self._flights.run(key, lambda: self._build(cache, key, build), keep=lambda _: False)

    async def _build(self, cache: SizedLru, key: tuple, build: Callable[[], Any]) -> Any:
        if cache is self.sections:
            self.section_computations += 1
        value = await build()
        cache.put(key, value)
        return value

    async def joined_users(self, room_id: str, stream: int) -> frozenset[str]:
        """Who is joined to the room once its events up to `stream` are in. The room's current state moves
        only with its events, so the position names the answer and no invalidation is needed; a herd's
        initial syncs read a big room's members once (presence needs everyone sharing a room)."""

        async def build() -> frozenset[str]:
            return frozenset(await self._rooms.member_event_ids(room_id))

        return await self._shared(self.joined, (room_id, stream), build)

    # -- state ----------------------------------------------------------------------------------

    async def state_fragment(self, f: Filter, room_id: str, group: int, senders: frozenset[str]) -> Fragment:
        """The room's state at `group` as the filter asks for it (lazy loading: only the members among
        `senders`), serialized once for everyone."""
        state_filter = f.room.state
        lazy = state_filter.lazy_load_members
        key = ("state", room_id, group, state_filter, f.event_format, f.event_fields, senders if lazy else None)
        return await self._shared(self.state_fragments, key, lambda: self._build_state(f, group, senders))

    async def _build_state(self, f: Filter, group: int, senders: frozenset[str]) -> Fragment:
        state_filter = f.room.state
        self.state_computations += 1
        ids = await self._state.get_state_ids(group)
        wanted = [
            event_id for (event_type, state_key), event_id in ids.items()
            if not (state_filter.lazy_load_members and event_type == MEMBER and state_key not in senders)
        ]
        found = await self._events.get_events(wanted)
        events = [found[i] for i in wanted if i in found and state_filter.matches(found[i])]
        # A big room's state is tens of milliseconds of CPU: built a slice at a time, other requests between.
        parts = []
        for start in range(0, len(events), SERIALIZE_CHUNK):
            parts.append(json_items(await self.serialize(f, events[start : start + SERIALIZE_CHUNK])))
            await self._turns.take()
        fragment = Fragment.of_items(parts)
        for _ in fragment.prepare():
            await self._turns.take()
        return fragment

    # -- timeline -------------------------------------------------------------------------------

    async def timeline(self, f: Filter, room_id: str, room_stream: int, limit: int) -> SharedTimeline:
        """The last `limit` events of the room up to its event at `room_stream` (its last at the sync's
        position), as an initial sync shows them."""
        timeline_filter = f.room.timeline
        key = ("timeline", room_id, room_stream, limit, timeline_filter, f.event_format, f.event_fields)
        return await self._shared(self.sections, key, lambda: self._build_timeline(f, room_id, room_stream, limit))

    async def _build_timeline(self, f: Filter, room_id: str, room_stream: int, limit: int) -> SharedTimeline:
        rows = await self._events.stream_rows(room_id, 0, room_stream, limit + 1)
        limited = len(rows) > limit
        rows = list(reversed(rows[:limit]))
        found = await self._events.get_events(r.event_id for r in rows)
        items = tuple((found[r.event_id], r.state_group) for r in rows if r.event_id in found)
        start_stream = rows[0].stream_ordering - 1 if rows else room_stream
        start = await self._events.timeline_last_at_stream(room_id, start_stream)
        prev_batch = topological_token(rows[0].before if rows else start.after) if (rows or start) else None
        timeline = SharedTimeline(items, limited, prev_batch, start, everyone_sees_all=False)
        if not await self._visibility.visible_to_every_member(group for _, group in items):
            return timeline
        events = tuple(e for e, _ in items if f.room.timeline.matches(e))
        serialized = Template.of(await self.serialize(f, events, ages_as_holes=True))
        return SharedTimeline(items, limited, prev_batch, start, True, events, serialized)

    async def serialize(self, f: Filter, events: Sequence[Event], ages_as_holes: bool = False) -> list[dict]:
        """Events in the filter's format with its `event_fields`; in the client format without `room_id`
        (sync's rooms are keyed by it already)."""
        if f.event_format == "federation":
            serialized = [e.get_pdu_json() for e in events]
        else:
            serialized = await self._serializer.serialize(events)
            for event in serialized:
                event.pop("room_id", None)
                if ages_as_holes:
                    _age_holes(event)
        if f.event_fields is not None:
            serialized = [only_fields(e, f.event_fields) for e in serialized]
        return serialized

    # -- summary and receipts -------------------------------------------------------------------

    async def summary(self, room_id: str, room_stream: int) -> SummaryBase:
        """Member counts from the current-state table (one grouped count), and hero candidates for a
        room with neither name nor alias (a few ids): no member event is read, whatever the room's size.
        Memberships change only with an event, so the room's last event names the answer."""
        return await self._shared(self.sections, ("summary", room_id, room_stream), lambda: self.summary_now(room_id))

    async def summary_now(self, room_id: str) -> SummaryBase:
        """The same, read now rather than shared."""
        counts = await self._rooms.membership_counts(room_id)
        joined, invited = counts.get("join", 0), counts.get("invite", 0)
        if await self._rooms.current_state_ids(room_id, ("m.room.name", "m.room.canonical_alias")):
            return SummaryBase(joined, invited, named=True)
        members = await self._rooms.some_members(room_id, ("join", "invite"), exclude="", limit=HERO_COUNT + 1)
        former = await self._rooms.some_members(room_id, ("leave", "ban"), exclude="", limit=HERO_COUNT + 1)
        return SummaryBase(joined, invited, False, tuple(members), tuple(former))

    async def public_receipts(self, room_id: str, receipt_stream: int) -> SharedReceipts | None:
        """Every public receipt of the room up to its receipt at `receipt_stream`; None if it has none."""
        if self._receipts is None or receipt_stream <= 0:
            return None
        key = ("receipts", room_id, receipt_stream)
        found = await self._shared(self.sections, key, lambda: self._build_receipts(room_id, receipt_stream))
        return found or None

    async def _build_receipts(self, room_id: str, receipt_stream: int) -> SharedReceipts | bool:
        # No user's private receipts: "" is nobody.
        content = (await self._receipts.receipts_for_rooms([room_id], None, receipt_stream, "")).get(room_id)
        return SharedReceipts(content, Fragment.of(content)) if content else False


def _age_holes(event: dict[str, Any]) -> None:
    """Put holes where the serializer put ages (the event's own and its redaction's), each keyed by the
    origin_server_ts its age counts from, which sits beside it."""
    for owner in (event, (event.get("unsigned") or {}).get("redacted_because")):
        if not isinstance(owner, dict):
            continue
        unsigned, sent = owner.get("unsigned"), owner.get("origin_server_ts")
        if isinstance(unsigned, dict) and "age" in unsigned and isinstance(sent, int):
            unsigned["age"] = Hole(sent)


def _size_of(value: Any) -> int:
    if isinstance(value, SharedTimeline):
        return value.size
    if isinstance(value, SharedReceipts):
        return 200 + 3 * len(value.fragment.json)  # the content as objects, and serialized
    return 500

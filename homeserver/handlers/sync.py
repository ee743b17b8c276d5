"""/sync: what changed for a user between two sync tokens, or everything for an initial sync.

Herd-proofing: identical concurrent requests share one computation (and its result is kept briefly
for a client's retry). An initial sync reads its user's side in one transaction (storage/sync.py) and
takes each joined room's shared parts - state, timeline, summary counts, public receipts - from
sync_rooms.py, where they are built once for every client; so a herd of full re-syncs costs one
computation per room and then, per client, one read, a few dictionary lookups and a memory copy.
Clients resuming together build their answers a slice at a time (turns.py), so the reactor keeps
serving other requests meanwhile.
"""

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.core.events import Event
from homeserver.core.filters import EventFilter, Filter, RoomEventFilter, matches_any
from homeserver.core.sync_token import SyncToken
from homeserver.handlers.notifier import Notifier
from homeserver.handlers.room_reads import ClientEventSerializer, topological_token
from homeserver.handlers.single_flight import SingleFlight
from homeserver.handlers.sync_rooms import SharedReceipts, SharedRooms, SharedTimeline, SummaryBase, age_filler
from homeserver.handlers.turns import Turns
from homeserver.handlers.visibility import HistoryVisibility
from homeserver.http.fragments import Fragment, assemble
from homeserver.http.responses import Response
from homeserver.storage.events import EventStore, TimelineRow
from homeserver.storage.lru import SizedLru
from homeserver.storage.rooms import RoomStore
from homeserver.storage.state import StateKey, StateStore
from homeserver.storage.sync import SyncStore, UserSnapshot

DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 100
MAX_TO_DEVICE = 100
MEMBER = "m.room.member"
# Stripped state shown with an invite or a knock (the spec's recommendation).
STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.name",
    "m.room.encryption",
    "m.room.topic",
)


class Positioned(Protocol):
    async def current_position(self) -> int: ...


@dataclass
class SyncSources:
    """The per-user streams other handlers keep; each may be absent (its part of sync stays empty)."""

    push: Any = None  # unread_counts(user_id) -> {room_id: (notifications, highlights)}
    receipts: Any = None  # receipts_for_rooms(room_ids, after, upto, user_id), current_position()
    typing: Any = None  # typing_position(), typing_in_room(room_id), rooms_changed_since(position)
    account_data: Any = None  # global_account_data / room_account_data(user_id, after, upto)
    to_device: Any = None  # messages_for(user, device, after, upto, limit), delete_up_to(...)
    device_lists: Any = None  # changed_users(after, upto), current_position()
    e2e_keys: Any = None  # one_time_key_counts(user, device), unused_fallback_key_types(user, device)
    # presence_position(), events_for(user_id, after, upto, sharing, newcomers),
    # sync_started/sync_ended(user_id, set_presence)
    presence: Any = None


@dataclass(frozen=True)
class SyncRequest:
    user_id: str
    device_id: str
    since: SyncToken | None
    filter: Filter
    filter_key: str  # identifies the filter for sharing identical requests
    full_state: bool
    timeout_ms: int
    gzip: bool
    set_presence: str = "online"  # not in the key: it changes the user's presence, not the answer

    @property
    def key(self) -> tuple:
        return (self.user_id, self.device_id, str(self.since), self.filter_key, self.full_state, self.gzip)


@dataclass
class RoomPlan:
    room_id: str
    full: bool  # initial, full_state, or newly joined: the whole state
    upto: int  # last events position this user may see in the room (a leave stops it)


@dataclass(frozen=True)
class InitialRoom:
    """What an initial sync gathered for one joined room before building its section."""

    room_id: str
    timeline: SharedTimeline | None = None
    own_timeline: list[dict] | None = None  # serialized for this user: visibility differs between members
    state: Fragment | list = dataclasses.field(default_factory=list)
    summary: SummaryBase | None = None
    receipts: SharedReceipts | None = None
    section: dict | None = None  # built whole by the general path instead


class SyncHandler:
    def __init__(
        self,
        events: EventStore,
        state: StateStore,
        rooms: RoomStore,
        visibility: HistoryVisibility,
        serializer: ClientEventSerializer,
        notifier: Notifier,
        sources: SyncSources,
        store: SyncStore,
        reactor: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._events = events
        self._state = state
        self._rooms = rooms
        self._visibility = visibility
        self._notifier = notifier
        self.sources = sources
        self._store = store
        self._clock = clock
        self._wall_clock = wall_clock
        self.flights = SingleFlight(keep_s=30.0)
        self.turns = Turns(reactor)
        self.shared = SharedRooms(events, state, rooms, visibility, serializer, self.turns, sources.receipts)

    @property
    def state_fragments(self) -> SizedLru[tuple, Fragment]:
        return self.shared.state_fragments

    @property
    def state_computations(self) -> int:
        return self.shared.state_computations

    async def current_token(self) -> SyncToken:
        """Every stream's position, read in one transaction (typing lives in memory)."""
        positions = await self._events.stream_positions()
        return self._token(positions)

    def _token(self, positions: dict[str, int]) -> SyncToken:
        """A token at these stored positions and the in-memory streams' current ones."""
        typing, presence = self.sources.typing, self.sources.presence
        return SyncToken(
            events=positions.get("events", 0),
            receipts=positions.get("receipts", 0),
            account_data=positions.get("account_data", 0),
            to_device=positions.get("to_device", 0),
            device_lists=positions.get("device_lists", 0),
            typing=typing.typing_position() if typing is not None else 0,
            presence=presence.presence_position() if presence is not None else 0,
        )

    async def sync(self, request: SyncRequest) -> Response:
        presence = self.sources.presence
        if presence is None:
            return await self._sync_shared(request)
        # Before computing: a user coming online sees it in this very answer.
        presence.sync_started(request.user_id, request.set_presence)
        try:
            return await self._sync_shared(request)
        finally:
            presence.sync_ended(request.user_id, request.set_presence)

    async def _sync_shared(self, request: SyncRequest) -> Response:
        if request.since is not None:
            # Moving on from a token acknowledges what earlier answers carried (to-device messages are
            # then deleted): a kept answer to an older token must not bring them back.
            user, device, since = request.key[:3]
            self.flights.forget(lambda k: k[0] == user and k[1] == device and k[2] != since)
        # A long-poll that ended with nothing new must not be replayed to the next identical request.
        response, _ = await self.flights.run(request.key, lambda: self._sync(request), keep=lambda r: r[1])
        return response

    async def _sync(self, request: SyncRequest) -> tuple[Response, bool]:
        """The response, and whether it is worth keeping for a retry: an initial sync, or one that
        brought something (an empty answer must not hide what arrives next)."""
        if request.since is None:
            return await self._initial(request), True
        deadline = self._clock() + request.timeout_ms / 1000
        while True:
            listener = self._notifier.listen(request.user_id)
            try:
                upto = await self.current_token()
                body, empty = await self._compute(request, _clamp(request.since, upto), upto)
                remaining = deadline - self._clock()
                if not empty or remaining <= 0:
                    return assemble(200, body, request.gzip), not empty
                if not await listener.wait(remaining):
                    body["next_batch"] = str(request.since)  # the deadline: an unchanged token
                    return assemble(200, body, request.gzip), False
            finally:
                listener.close()

    # -- an initial sync ------------------------------------------------------------------------

    async def _initial(self, request: SyncRequest) -> Response:
        """Everything for the user: their side read in one transaction, each joined room's shared parts
        from the shared cache, then the answer built in one go once it is this client's turn."""
        user_id, room_filter, s = request.user_id, request.filter.room, self.sources
        snapshot = await self._store.initial_snapshot(user_id, request.device_id, MAX_TO_DEVICE)
        upto = self._token(snapshot.positions)
        gathered = [
            await self._initial_room(request, snapshot, upto, room_id)
            for room_id in snapshot.rooms("join") if room_filter.includes_room(room_id)
        ]  # fmt: skip
        rooms: dict[str, dict] = {"join": {}, "invite": {}, "leave": {}, "knock": {}}
        for membership, key in (("invite", "invite_state"), ("knock", "knock_state")):
            for room_id in snapshot.rooms(membership):
                if room_filter.includes_room(room_id):
                    rooms[membership][room_id] = {key: {"events": await self._stripped_state(room_id, user_id)}}
        await self._left_rooms(request, None, upto, {}, rooms)
        account_data = await self._global_account_data(request, None, upto)
        sharing = None
        if s.presence is not None and _wants_presence(request.filter.presence):
            # From the rooms' shared member sets: one read of a big room for a whole herd, not one per client.
            sharing = set().union(
                *[await self.shared.joined_users(r, snapshot.room_streams.get(r, 0)) for r in snapshot.rooms("join")]
            )
        presence = await self._presence(request, None, upto, sharing)
        await self.turns.take()
        now_ms = int(self._wall_clock() * 1000)
        counts = snapshot.unread_counts if s.push is not None else {}
        for room in gathered:
            section = room.section or self._initial_section(request, snapshot, room, now_ms)
            rooms["join"][room.room_id] = _with_unread(section, counts.get(room.room_id, (0, 0)))
        next_batch = upto
        to_device: list[dict] = []
        if s.to_device is not None:
            to_device = snapshot.to_device
            next_batch = _replace(upto, to_device=snapshot.to_device_position)
        body: dict[str, Any] = {
            "next_batch": str(next_batch),
            "rooms": rooms,
            "account_data": {"events": account_data},
            "presence": {"events": presence},
            "to_device": {"events": to_device},
            "device_lists": {"changed": [], "left": []},
        }
        if s.e2e_keys is not None:
            body["device_one_time_keys_count"] = snapshot.one_time_key_counts
            body["device_unused_fallback_key_types"] = snapshot.fallback_key_types
        return assemble(200, body, request.gzip)

    async def _initial_room(
        self, request: SyncRequest, snapshot: UserSnapshot, upto: SyncToken, room_id: str
    ) -> InitialRoom:
        """The shared parts of a joined room, and the timeline of this user if theirs may differ."""
        f = request.filter
        room_stream = snapshot.room_streams.get(room_id)
        if room_stream is None:  # joined after the positions were read: the general path, as it always did
            plan = RoomPlan(room_id, True, upto.events)
            return InitialRoom(room_id, section=await self._joined_room(request, plan, None, upto))
        limit = min(f.room.timeline.limit or DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT)
        timeline = await self.shared.timeline(f, room_id, room_stream, limit)
        own = None
        events: Iterable[Event] = timeline.events
        if not timeline.everyone_sees_all:
            visible = await self._visibility.filter_visible(request.user_id, timeline.items, joined_now=True)
            events = [e for e, _ in visible if f.room.timeline.matches(e)]
            own = await self.shared.serialize(f, events)
        # Lazy loading sends the members relevant to the timeline: its senders. Leaving the syncing user
        # out (unless they sent something) keeps the state the same for every client of a herd.
        senders = frozenset(e.sender for e in events)
        state: Fragment | list = []
        if timeline.start is not None:
            state = await self.shared.state_fragment(f, room_id, timeline.start.state_group, senders)
        return InitialRoom(
            room_id,
            timeline,
            own,
            state,
            await self.shared.summary(room_id, room_stream),
            await self.shared.public_receipts(room_id, snapshot.receipt_streams.get(room_id, 0)),
        )

    def _initial_section(self, request: SyncRequest, snapshot: UserSnapshot, room: InitialRoom, now_ms: int) -> dict:
        """A joined room's section of an initial sync from what was gathered: no waiting here."""
        assert room.timeline is not None and room.summary is not None
        timeline = room.timeline
        if room.own_timeline is not None:
            events: Any = room.own_timeline
        else:
            assert timeline.serialized is not None
            events = timeline.serialized.fill(age_filler(now_ms))
        s, room_id = self.sources, room.room_id
        ephemeral: list[dict] = []
        if s.typing is not None:
            ephemeral.append({"type": "m.typing", "content": {"user_ids": s.typing.typing_in_room(room_id)}})
        private = snapshot.private_receipts.get(room_id) if s.receipts is not None else None
        if private:
            content = dict(room.receipts.content) if room.receipts else {}
            for event_id, by_type in private.items():  # shared receipts are public: no type to merge
                content[event_id] = {**content.get(event_id, {}), **by_type}
            ephemeral.append({"type": "m.receipt", "content": content})
        elif room.receipts is not None:
            ephemeral.append({"type": "m.receipt", "content": room.receipts.fragment})
        account_data: list[dict] = []
        if s.account_data is not None:
            data = snapshot.room_account_data.get(room_id, {})
            account_data = [{"type": t, "content": c} for t, c in data.items()]
        return {
            "timeline": {
                "events": events,
                "limited": timeline.limited,
                **({"prev_batch": timeline.prev_batch} if timeline.prev_batch else {}),
            },
            "state": {"events": room.state},
            "ephemeral": {"events": [e for e in ephemeral if request.filter.room.ephemeral.matches(e)]},
            "account_data": {"events": [e for e in account_data if request.filter.room.account_data.matches(e)]},
            "summary": room.summary.for_user(request.user_id),
        }

    # -- an incremental sync --------------------------------------------------------------------

    async def _compute(self, request: SyncRequest, since: SyncToken, upto: SyncToken) -> tuple[dict, bool]:
        user_id = request.user_id
        room_filter = request.filter.room
        joined = [r for r in await self._rooms.rooms_for_user(user_id, ("join",)) if room_filter.includes_room(r)]
        changes = {}  # room -> the user's latest membership change in (since, upto]
        for room_id, membership, event_id, stream in await self._rooms.membership_changes(
            user_id, since.events, upto.events
        ):
            changes[room_id] = (membership, event_id, stream)
        plans = []
        changed_rooms = await self._events.rooms_with_events(joined, since.events, upto.events)
        ephemeral_rooms = await self._ephemeral_rooms(since, upto, joined)
        for room_id in joined:
            full = request.full_state or (room_id in changes and changes[room_id][0] == "join")
            if full or room_id in changed_rooms or room_id in ephemeral_rooms:
                plans.append(RoomPlan(room_id, full, upto.events))
        rooms: dict[str, dict] = {"join": {}, "invite": {}, "leave": {}, "knock": {}}
        counts = await self.sources.push.unread_counts(user_id) if self.sources.push is not None else {}
        for plan in plans:
            section = await self._joined_room(request, plan, since, upto)
            if section is not None:
                rooms["join"][plan.room_id] = _with_unread(section, counts.get(plan.room_id, (0, 0)))
        for membership, key in (("invite", "invite_state"), ("knock", "knock_state")):
            for room_id in await self._rooms.rooms_for_user(user_id, (membership,)):
                if room_filter.includes_room(room_id) and room_id in changes:
                    rooms[membership][room_id] = {key: {"events": await self._stripped_state(room_id, user_id)}}
        await self._left_rooms(request, since, upto, changes, rooms)
        body: dict[str, Any] = {
            "next_batch": str(upto),
            "rooms": rooms,
            "account_data": {"events": await self._global_account_data(request, since, upto)},
        }
        # Who shares a room with the user, and whose membership moved in their rooms: one read each, for
        # presence and device lists both.
        sharing = await self._rooms.users_sharing_rooms(user_id)
        joined_any = await self._rooms.rooms_for_user(user_id, ("join",))
        moved = await self._rooms.members_changed_in_rooms(
            joined_any + [r for r in changes if r not in joined_any], since.events, upto.events
        )
        # Users the user newly shares a room with: they joined one of the user's rooms, or the user
        # joined a room (then everyone is taken as new: rare, and their presence is welcome again).
        newcomers = {u for u, m in moved.items() if m == "join"}
        if any(m == "join" for m, _, _ in changes.values()):
            newcomers |= sharing
        body["presence"] = {"events": await self._presence(request, since, upto, sharing, newcomers)}
        to_device, to_device_upto = await self._to_device(request, since, upto)
        body["to_device"] = {"events": to_device}
        if to_device_upto != upto.to_device:
            body["next_batch"] = str(_replace(upto, to_device=to_device_upto))
        body["device_lists"] = await self._device_lists(user_id, since, upto, changes, sharing, moved)
        keys = self.sources.e2e_keys
        if keys is not None:
            body["device_one_time_keys_count"] = await keys.one_time_key_counts(user_id, request.device_id)
            body["device_unused_fallback_key_types"] = await keys.unused_fallback_key_types(user_id, request.device_id)
        empty = not (
            any(rooms.values())
            or body["account_data"]["events"]
            or body["presence"]["events"]
            or to_device
            or body["device_lists"]["changed"]
            or body["device_lists"]["left"]
        )
        return body, empty

    async def _ephemeral_rooms(self, since: SyncToken, upto: SyncToken, joined: list[str]) -> set[str]:
        """Joined rooms with new receipts, typing or room account data since the last sync."""
        found: set[str] = set()
        s = self.sources
        if s.typing is not None and upto.typing > since.typing:
            found |= s.typing.rooms_changed_since(since.typing)
        if s.receipts is not None and upto.receipts > since.receipts:
            found |= set(await s.receipts.receipts_for_rooms(joined, since.receipts, upto.receipts, ""))
        return found & set(joined)

    async def _joined_room(
        self, request: SyncRequest, plan: RoomPlan, since: SyncToken | None, upto: SyncToken
    ) -> dict | None:
        room_filter = request.filter.room
        timeline_filter = room_filter.timeline
        limit = min(timeline_filter.limit or DEFAULT_TIMELINE_LIMIT, MAX_TIMELINE_LIMIT)
        after = since.events if since is not None and not plan.full else 0
        rows = await self._events.stream_rows(plan.room_id, after, plan.upto, limit + 1)
        limited = len(rows) > limit
        rows = list(reversed(rows[:limit]))
        events = await self._events.get_events(r.event_id for r in rows)
        items = [(events[r.event_id], r.state_group) for r in rows if r.event_id in events]
        items = await self._visibility.filter_visible(request.user_id, items, joined_now=True)
        timeline = [e for e, _ in items if timeline_filter.matches(e)]
        start_stream = rows[0].stream_ordering - 1 if rows else plan.upto
        start = await self._events.timeline_last_at_stream(plan.room_id, start_stream)
        prev_batch = topological_token(rows[0].before if rows else start.after) if (rows or start) else None

        lazy = room_filter.state.lazy_load_members
        # Lazy loading sends the members relevant to the timeline: its senders. Leaving the syncing user
        # out (unless they sent something) keeps the state the same for every client of a herd.
        senders = frozenset(e.sender for e in timeline)
        state: Any = []
        if start is not None and (plan.full or limited):
            if plan.full:
                state = await self.shared.state_fragment(request.filter, plan.room_id, start.state_group, senders)
            else:
                since_row = await self._events.timeline_last_at_stream(plan.room_id, since.events)
                state = await self._state_delta(request, since_row, start, senders)
        elif lazy and timeline:
            state = await self._lazy_members(request, start, senders, timeline)

        ephemeral = await self._ephemeral(request, plan.room_id, since, upto)
        account_data = await self._room_account_data(request, plan.room_id, since, upto)
        if not plan.full and not timeline and not state and not ephemeral and not account_data:
            return None
        section: dict[str, Any] = {
            "timeline": {
                "events": await self.shared.serialize(request.filter, timeline),
                "limited": limited,
                **({"prev_batch": prev_batch} if prev_batch else {}),
            },
            "state": {"events": state},
            "ephemeral": {"events": ephemeral},
            "account_data": {"events": account_data},
        }
        if plan.full or any(e.type == MEMBER for e in timeline):
            section["summary"] = (await self.shared.summary_now(plan.room_id)).for_user(request.user_id)
        return section

    # -- room state -----------------------------------------------------------------------------

    async def _state_delta(
        self, request: SyncRequest, since_row: TimelineRow | None, start: TimelineRow, senders: frozenset[str]
    ) -> list[dict]:
        """The state that changed between the last sync and the start of a limited timeline."""
        new = await self._state.get_state_ids(start.state_group)
        old = await self._state.get_state_ids(since_row.state_group) if since_row else {}
        state_filter = request.filter.room.state
        keys = [
            k
            for k, v in new.items()
            if old.get(k) != v and not (state_filter.lazy_load_members and k[0] == MEMBER and k[1] not in senders)
        ]
        if state_filter.lazy_load_members:
            keys += [(MEMBER, s) for s in senders if (MEMBER, s) in new and (MEMBER, s) not in keys]
        found = await self._events.get_events(new[k] for k in keys)
        return await self.shared.serialize(
            request.filter, [found[new[k]] for k in keys if new[k] in found and state_filter.matches(found[new[k]])]
        )

    async def _lazy_members(
        self, request: SyncRequest, start: TimelineRow | None, senders: Iterable[str], timeline: list[Event]
    ) -> list[dict]:
        """Lazy loading: the member events of the timeline's senders, as of the timeline's start."""
        if start is None:
            return []
        in_timeline = {e.state_key for e in timeline if e.type == MEMBER}
        keys: list[StateKey] = [(MEMBER, s) for s in senders if s not in in_timeline]
        ids = await self._state.get_state_ids(start.state_group, keys)
        found = await self._events.get_events(ids.values())
        return await self.shared.serialize(request.filter, [found[i] for i in ids.values() if i in found])

    async def _stripped_state(self, room_id: str, user_id: str) -> list[dict]:
        pending = await self._events.pending_remote_membership(room_id, user_id)
        if pending is not None and pending.event is not None:  # a room we do not hold: the state its server sent
            e = pending.event
            member = {"type": e.type, "state_key": e.state_key, "content": dict(e.get_pdu_json()["content"])}
            return [*pending.stripped_state, {**member, "sender": e.sender}]
        ids = await self._rooms.current_state_ids(room_id, (*STRIPPED_STATE_TYPES, MEMBER))
        wanted = [v for (t, k), v in ids.items() if t != MEMBER or k == user_id]
        found = await self._events.get_events(wanted)
        return [
            {"type": e.type, "state_key": e.state_key, "content": dict(e.get_pdu_json()["content"]), "sender": e.sender}
            for e in (found[i] for i in wanted if i in found)
        ]

    # -- left rooms -----------------------------------------------------------------------------

    async def _left_rooms(
        self, request: SyncRequest, since: SyncToken | None, upto: SyncToken, changes: dict, rooms: dict
    ) -> None:
        """Rooms the user left (or was kicked or banned from) since the last sync; on an initial sync
        only with include_leave, and then every room left and not forgotten."""
        room_filter = request.filter.room
        if since is None:
            if not room_filter.include_leave:
                return
            left = await self._rooms.rooms_for_user(request.user_id, ("leave", "ban"))
            targets = {}
            for room_id in left:
                if room_filter.includes_room(room_id) and not await self._rooms.is_forgotten(request.user_id, room_id):
                    membership = await self._rooms.get_membership(room_id, request.user_id)
                    targets[room_id] = membership[1] if membership else None
        else:
            targets = {
                room_id: event_id
                for room_id, (membership, event_id, _) in changes.items()
                if membership in ("leave", "ban") and room_filter.includes_room(room_id)
            }
        for room_id, event_id in targets.items():
            if event_id is None:
                continue
            rows = await self._events.timeline_rows([event_id])
            if event_id not in rows:
                continue
            plan = RoomPlan(room_id, full=since is None or request.full_state, upto=rows[event_id].stream_ordering)
            section = await self._joined_room(request, plan, since, upto)
            if section is not None:
                section.pop("ephemeral", None)
                section.pop("summary", None)
                rooms["leave"][room_id] = section

    # -- per-user streams -----------------------------------------------------------------------

    async def _ephemeral(self, request: SyncRequest, room_id: str, since: SyncToken | None, upto: SyncToken) -> list:
        out = []
        s = self.sources
        ephemeral_filter: RoomEventFilter = request.filter.room.ephemeral
        if s.typing is not None and (since is None or room_id in s.typing.rooms_changed_since(since.typing)):
            out.append({"type": "m.typing", "content": {"user_ids": s.typing.typing_in_room(room_id)}})
        if s.receipts is not None:
            after = since.receipts if since is not None else None
            receipts = await s.receipts.receipts_for_rooms([room_id], after, upto.receipts, request.user_id)
            if receipts.get(room_id):
                out.append({"type": "m.receipt", "content": receipts[room_id]})
        return [e for e in out if ephemeral_filter.matches(e)]

    async def _presence(
        self,
        request: SyncRequest,
        since: SyncToken | None,
        upto: SyncToken,
        sharing: set[str] | None = None,
        newcomers: frozenset[str] | set[str] = frozenset(),
    ) -> list[Any]:  # JSON of m.presence events (Raw)
        """m.presence of the user and of those sharing a room with them (`sharing`, read here if not
        given); a filter that leaves presence out costs nothing."""
        source, presence_filter = self.sources.presence, request.filter.presence
        if source is None or not _wants_presence(presence_filter):
            return []
        if sharing is None:
            sharing = await self._rooms.users_sharing_rooms(request.user_id)
        after = since.presence if since is not None else None
        events = presence_filter.filter(source.events_for(request.user_id, after, upto.presence, sharing, newcomers))
        return source.as_json(events[: presence_filter.limit] if presence_filter.limit else events)

    async def _global_account_data(self, request: SyncRequest, since: SyncToken | None, upto: SyncToken) -> list:
        source = self.sources.account_data
        if source is None:
            return []
        after = since.account_data if since is not None else None
        data = await source.global_account_data(request.user_id, after, upto.account_data)
        events = [{"type": t, "content": c} for t, c in data.items()]
        return [e for e in events if request.filter.account_data.matches(e)]

    async def _room_account_data(
        self, request: SyncRequest, room_id: str, since: SyncToken | None, upto: SyncToken
    ) -> list:
        source = self.sources.account_data
        if source is None:
            return []
        after = since.account_data if since is not None else None
        data = (await source.room_account_data(request.user_id, after, upto.account_data)).get(room_id, {})
        events = [{"type": t, "content": c} for t, c in data.items()]
        return [e for e in events if request.filter.room.account_data.matches(e)]

    async def _to_device(self, request: SyncRequest, since: SyncToken, upto: SyncToken) -> tuple[list, int]:
        """Messages for this device. A sync with a later token acknowledges what the earlier one sent,
        so those are deleted now: each message is delivered until acknowledged, then never again."""
        source = self.sources.to_device
        if source is None:
            return [], upto.to_device
        after = since.to_device
        if after:
            await source.delete_up_to(request.user_id, request.device_id, after)
        return await source.messages_for(request.user_id, request.device_id, after, upto.to_device, MAX_TO_DEVICE)

    async def _device_lists(
        self, user_id: str, since: SyncToken, upto: SyncToken, changes: dict, sharing: set[str], moved: dict[str, str]
    ) -> dict[str, list[str]]:
        """Users sharing a room whose devices changed (or who newly share one: the client must fetch
        their keys), and users who no longer share any room."""
        changed: set[str] = set()
        source = self.sources.device_lists
        if source is not None and upto.device_lists > since.device_lists:
            changed |= await source.changed_users(since.device_lists, upto.device_lists) & sharing
        changed |= {u for u, m in moved.items() if m == "join" and u in sharing}
        left = {u for u, m in moved.items() if m in ("leave", "ban") and u not in sharing}
        if any(m in ("leave", "ban") for m, _, _ in changes.values()):
            left |= {u for u in moved if u not in sharing}
        left.discard(user_id)  # the user's own devices stay in `changed`: clients notice their new devices
        return {"changed": sorted(changed), "left": sorted(left - changed)}


def _with_unread(section: dict, counts: tuple[int, int]) -> dict:
    section["unread_notifications"] = {"notification_count": counts[0], "highlight_count": counts[1]}
    return section


def _clamp(since: SyncToken, upto: SyncToken) -> SyncToken:
    """A token from before a restart may be ahead on in-memory streams (typing, and presence changes
    the server had no time to store): start those over."""
    return _replace(
        since,
        typing=since.typing if since.typing <= upto.typing else 0,
        presence=since.presence if since.presence <= upto.presence else 0,
    )


def _wants_presence(presence_filter: EventFilter) -> bool:
    """False when the filter cannot let any m.presence event through, whoever sent it."""
    types, senders = presence_filter.types, presence_filter.senders
    return not (
        matches_any("m.presence", presence_filter.not_types)
        or (types is not None and not matches_any("m.presence", types))
        or senders == ()
    )


def _replace(token: SyncToken, **changes: int) -> SyncToken:
    return dataclasses.replace(token, **changes)

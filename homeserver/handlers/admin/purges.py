"""Admin purges: a room's history before a point, a whole room, push actions of a user or a room.

A purge is validated when it is made (unknown room, user or event, bad timestamp: a MatrixError), then
`plan` counts what it would delete (the dry run) and `run` deletes it in keyed batches, phase by phase,
reporting after every batch. Each phase finds its rows from the keys alone, so running a purge again after
an interruption finishes it. What each phase deletes, and in which order, is in the store (storage/purge.py).
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from homeserver.core.errors import MatrixError
from homeserver.core.ids import parse_user_id
from homeserver.handlers.batches import Batches, Step
from homeserver.handlers.room_events import RoomEventSender
from homeserver.storage.accounts import AccountStore
from homeserver.storage.admin import AdminStore, RoomBlock
from homeserver.storage.events import TopologicalPosition
from homeserver.storage.purge import USER_KEYED, PurgeStore
from homeserver.storage.rooms import RoomStore

MEMBERS = "members"  # the report's count of local members made to leave a room being deleted
LEAVING = ("join", "invite", "knock")  # memberships a leave event ends
LEAVE_GRACE_S = 2.0


@dataclass
class PurgeReport:
    """What a purge would delete (`planned`) and has deleted so far, per table; the phase it is in."""

    planned: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    phase: str = ""
    errors: list[str] = field(default_factory=list)
    on_change: Callable[["PurgeReport"], None] | None = None

    def add(self, phase: str, counts: Mapping[str, int]) -> int:
        """Count a batch's deletions; returns how many rows it handled."""
        self.phase = phase
        for table, n in counts.items():
            self.deleted[table] = self.deleted.get(table, 0) + n
        if self.on_change is not None:
            self.on_change(self)
        return sum(counts.values())

    @property
    def total_planned(self) -> int:
        return sum(self.planned.values())

    @property
    def total_deleted(self) -> int:
        return sum(self.deleted.values())


class Purge(Protocol):
    kind: str
    target: str

    async def plan(self) -> dict[str, int]: ...

    async def run(self, batches: Batches, report: PurgeReport) -> None: ...


def for_each(keys: Sequence[str], delete: Callable[[str, int], Awaitable[int]]) -> Step:
    """A batch step that works through `keys` one after the other (a member's push actions, ...): it ends
    only when the last key has nothing left."""
    pending = list(keys)

    async def step(limit: int) -> int:
        while pending:
            handled = await delete(pending[0], limit)
            if handled:
                return handled
            pending.pop(0)
        return 0

    return step


async def make_leave(sender: RoomEventSender, room_id: str, user_id: str) -> None:
    """The user leaves (or rejects an invite, or rescinds a knock) by their own member event, so their
    clients see the room go as after any leave."""
    await sender.send(room_id, user_id, "m.room.member", {"membership": "leave"}, user_id)


@dataclass
class HistoryPurge:
    """Events of a room at or before `upto` except those the room still needs (see storage/purge.py), and
    the room's push actions below its first kept message."""

    store: PurgeStore
    target: str
    upto: TopologicalPosition
    kind: str = "purge_history"

    async def _scope(self) -> tuple[list[str], int | None]:
        return await self.store.members(self.target), await self.store.first_kept_stream(self.target, self.upto)

    async def plan(self) -> dict[str, int]:
        users, push_before = await self._scope()
        counts = await self.store.count_history(self.target, self.upto)
        pushes = await self.store.count_push_actions(users, self.target, push_before) if push_before else 0
        return {"event_push_actions": pushes, **counts}

    async def run(self, batches: Batches, report: PurgeReport) -> None:
        users, push_before = await self._scope()
        if push_before is not None:

            async def push(user_id: str, limit: int) -> int:
                n = await self.store.delete_push_actions_batch(user_id, self.target, push_before, limit)
                return report.add("event_push_actions", {"event_push_actions": n})

            await batches.run(for_each(users, push))
        cursor = 0

        async def events(limit: int) -> int:
            nonlocal cursor
            counts, cursor = await self.store.delete_history_batch(self.target, self.upto, cursor, limit)
            return report.add("events", counts)

        await batches.run(events)


@dataclass
class RoomDeletion:
    """Everything kept under the room's id. Local members are made to leave first; then the rows go, table
    by table, in an order that keeps every step consistent: what refers to the room's members and events,
    then the current state (the room disappears from everyone's sync), the events, the `rooms` row with the
    last events (the room is unknown from then on), and the state groups nothing refers to any more."""

    store: PurgeStore
    admin: AdminStore
    rooms: RoomStore
    sender: RoomEventSender
    target: str
    requested_by: str
    block: bool
    kind: str = "delete_room"

    async def _local_members(self) -> list[str]:
        members = []
        for membership in LEAVING:
            members += await self.rooms.member_event_ids(self.target, membership)
        suffix = ":" + self.sender.server_name
        return sorted(user for user in members if user.endswith(suffix))

    async def plan(self) -> dict[str, int]:
        counts = await self.store.count_room(self.target, await self.store.members(self.target))
        return {MEMBERS: len(await self._local_members()), **counts}

    async def run(self, batches: Batches, report: PurgeReport) -> None:
        room_id = self.target
        await self.admin.start_room_deletion(room_id, self.requested_by, self.block)
        for user_id in await self._local_members():
            try:
                await make_leave(self.sender, room_id, user_id)
            except MatrixError as e:
                report.errors.append(f"{user_id} could not leave: {e.msg}")
            report.add(MEMBERS, {MEMBERS: 1})
        if report.deleted.get(MEMBERS):
            # Their long-polling syncs wake on the leave at once; the memberships they read must still be
            # there when they look, or a syncing client never learns that it left.
            await batches.wait(LEAVE_GRACE_S)
        users = await self.store.members(room_id)

        async def push(user_id: str, limit: int) -> int:
            n = await self.store.delete_push_actions_batch(user_id, room_id, None, limit)
            return report.add("event_push_actions", {"event_push_actions": n})

        await batches.run(for_each(users, push))
        for table in USER_KEYED:
            await batches.run(self._by_user_chunks(table, users, report))
        for table in ("receipts", "room_aliases", "current_state"):
            await batches.run(self._room_keyed(table, report))

        async def events(limit: int) -> int:
            return report.add("events", await self.store.delete_room_events_batch(room_id, limit))

        await batches.run(events)
        report.add("rooms", await self.store.delete_room_record(room_id))

        async def state(limit: int) -> int:
            return report.add("state_groups", await self.store.delete_room_state_batch(room_id, limit))

        await batches.run(state)
        await self.admin.finish_room_deletion(room_id)

    def _by_user_chunks(self, table: str, users: list[str], report: PurgeReport) -> Step:
        done = 0

        async def step(limit: int) -> int:
            nonlocal done
            while done < len(users):
                chunk = users[done : done + limit]
                done += len(chunk)
                n = await self.store.delete_user_keyed(table, self.target, chunk)
                if n:
                    return report.add(table, {table: n})
            return 0

        return step

    def _room_keyed(self, table: str, report: PurgeReport) -> Step:
        async def step(limit: int) -> int:
            return report.add(table, {table: await self.store.delete_room_keyed(table, self.target, limit)})

        return step


@dataclass
class PushActionsPurge:
    """Every push action of a user (all rooms) or of a room (all its members); the unread counts go down
    with them, to zero."""

    store: PurgeStore
    target: str
    by_room: bool
    kind: str = "purge_push_actions"

    async def _scope(self) -> tuple[list[str], str | None]:
        if self.by_room:
            return await self.store.members(self.target), self.target
        return [self.target], None

    async def plan(self) -> dict[str, int]:
        users, room_id = await self._scope()
        return {"event_push_actions": await self.store.count_push_actions(users, room_id, None)}

    async def run(self, batches: Batches, report: PurgeReport) -> None:
        users, room_id = await self._scope()

        async def push(user_id: str, limit: int) -> int:
            n = await self.store.delete_push_actions_batch(user_id, room_id, None, limit)
            return report.add("event_push_actions", {"event_push_actions": n})

        await batches.run(for_each(users, push))


class PurgeHandler:
    """Makes purges from an admin's request, refusing what cannot be purged; and answers whether a room
    may be joined (blocked or being deleted: no)."""

    def __init__(
        self,
        store: PurgeStore,
        admin: AdminStore,
        rooms: RoomStore,
        accounts: AccountStore,
        sender: RoomEventSender,
    ) -> None:
        self._store = store
        self._admin = admin
        self._rooms = rooms
        self._accounts = accounts
        self._sender = sender

    async def history(self, room_id: str, before_ts: int | None, before_event_id: str | None) -> HistoryPurge:
        """Purge events before `before_ts` (ms: those before the first event sent at or after it) or
        before the event `before_event_id`; exactly one of the two."""
        await self._require_room(room_id)
        if (before_ts is None) == (before_event_id is None):
            raise MatrixError(400, "M_MISSING_PARAM", "Give exactly one of before_ts and before_event_id")
        if before_event_id is not None:
            found = await self._store.event_place(before_event_id)
            if found is None or found[0] != room_id:
                raise MatrixError(404, "M_NOT_FOUND", f"Unknown event {before_event_id} in room {room_id}")
            place = found[1]
            return HistoryPurge(self._store, room_id, TopologicalPosition(place.depth, place.stream - 1))
        if isinstance(before_ts, bool) or not isinstance(before_ts, int) or before_ts < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "before_ts must be a timestamp in milliseconds since 1970")
        first = await self._store.first_place_since(room_id, before_ts)
        if first is not None:
            return HistoryPurge(self._store, room_id, TopologicalPosition(first.depth, first.stream - 1))
        newest = await self._store.newest_place(room_id)
        assert newest is not None, "a room we hold has its create event"
        return HistoryPurge(self._store, room_id, newest)  # all of it but what the room needs

    async def room_deletion(self, room_id: str, requested_by: str, block: bool) -> RoomDeletion:
        """An unfinished deletion can be run again after its room is gone."""
        if await self._rooms.get_room(room_id) is None and not await self._admin.is_deleting(room_id):
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        return RoomDeletion(self._store, self._admin, self._rooms, self._sender, room_id, requested_by, block)

    async def push_actions(self, user_id: str | None, room_id: str | None) -> PushActionsPurge:
        if (user_id is None) == (room_id is None):
            raise MatrixError(400, "M_MISSING_PARAM", "Give exactly one of user_id and room_id")
        if room_id is not None:
            await self._require_room(room_id)
            return PushActionsPurge(self._store, room_id, by_room=True)
        assert user_id is not None
        await require_local_user(self._accounts, self._sender.server_name, user_id)
        return PushActionsPurge(self._store, user_id, by_room=False)

    async def check_joinable(self, room_id: str) -> None:
        """403 M_FORBIDDEN for a room an admin blocked or is deleting (joins, invites and knocks)."""
        block = await self._admin.room_block(room_id)
        if block is RoomBlock.BLOCKED:
            raise MatrixError(403, "M_FORBIDDEN", "This room has been blocked")
        if block is RoomBlock.DELETING:
            raise MatrixError(403, "M_FORBIDDEN", "This room is being deleted")

    async def _require_room(self, room_id: str) -> None:
        if await self._rooms.get_room(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}")


async def require_local_user(accounts: AccountStore, server_name: str, user_id: str) -> None:
    """400 M_INVALID_PARAM for what is not a user id of this server, 404 M_NOT_FOUND for an unknown user."""
    try:
        server = parse_user_id(user_id)[1]
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user id {user_id!r}") from None
    if server != server_name:
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_id} is not a user of this server")
    if await accounts.get_user(user_id) is None:
        raise MatrixError(404, "M_NOT_FOUND", f"Unknown user {user_id}")

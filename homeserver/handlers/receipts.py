"""Receipts and read markers (client-server API, "Receipts" and "Fully read markers").

A receipt (`m.read`, `m.read.private`) is kept per (room, type, user, thread) and only ever moves
forward in the room's stream: one for an earlier event than the stored one is accepted and ignored.
Private receipts are shown to their owner only. The fully read marker (`m.fully_read`) is room
account data set through these APIs, and may move back (a user undoing "mark as read").
A public receipt of one of our users that moves forward goes to the room's other servers as an m.receipt
EDU (ephemeral: a receipt lost with a failed server is superseded by the next one).
"""

import time
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.handlers.account_data import FULLY_READ, AccountDataHandler
from homeserver.handlers.notifier import Notifier
from homeserver.handlers.visibility import HistoryVisibility
from homeserver.storage.events import EventStore, TimelineRow
from homeserver.storage.push import PushStore
from homeserver.storage.receipts import MAIN_THREAD, READ, READ_PRIVATE, Receipt, ReceiptStore

RECEIPT_TYPES = (READ, READ_PRIVATE)
MARKER_TYPES = (FULLY_READ, READ, READ_PRIVATE)  # what /read_markers and /receipt accept
MAX_THREAD_ID_BYTES = 255


class ReceiptHandler:
    def __init__(
        self,
        store: ReceiptStore,
        account_data: AccountDataHandler,
        events: EventStore,
        visibility: HistoryVisibility,
        notifier: Notifier | None = None,
    ) -> None:
        self._store = store
        self._account_data = account_data
        self._events = events
        self._visibility = visibility
        self.notifier = notifier
        self.push: PushStore | None = None  # unread counts, moved by m.read receipts (set by the app)
        # FederationSender.send_room_edu(room_id, edu_type, content, key), set by the app when federating.
        self.federation: Callable[[str, str, dict, Any], Awaitable[None]] | None = None

    # -- the client API -----------------------------------------------------------------------

    async def receipt(
        self, requester: Requester, room_id: str, receipt_type: str, event_id: str, thread_id: str | None
    ) -> None:
        """POST /receipt: 400 M_INVALID_PARAM for an unknown type or a bad thread id, 403 M_FORBIDDEN
        outside a room the user is joined to, 404 M_NOT_FOUND for an event they cannot see there."""
        if receipt_type not in MARKER_TYPES:
            raise MatrixError(400, "M_INVALID_PARAM", f"Receipt type must be one of {', '.join(MARKER_TYPES)}")
        if thread_id is not None:
            _check_thread_id(thread_id)
            if receipt_type == FULLY_READ:
                raise MatrixError(400, "M_INVALID_PARAM", f"thread_id is not compatible with {FULLY_READ} receipts.")
        await self._check_joined(requester.user_id, room_id)
        row = await self._visible_event(requester.user_id, room_id, event_id)
        if receipt_type == FULLY_READ:
            await self._set_fully_read(requester.user_id, room_id, event_id)
        elif await self._put(requester.user_id, room_id, receipt_type, row, thread_id):
            await self._federate(requester.user_id, room_id, receipt_type, row.event_id, thread_id)

    async def read_markers(self, requester: Requester, room_id: str, markers: dict[str, str]) -> None:
        """POST /read_markers: {m.fully_read, m.read, m.read.private: event id}, each optional. Every
        event is checked before anything is written."""
        await self._check_joined(requester.user_id, room_id)
        rows = {
            kind: await self._visible_event(requester.user_id, room_id, event_id) for kind, event_id in markers.items()
        }
        for kind, row in rows.items():
            if kind == FULLY_READ:
                await self._set_fully_read(requester.user_id, room_id, row.event_id)
            elif await self._put(requester.user_id, room_id, kind, row, None):
                await self._federate(requester.user_id, room_id, kind, row.event_id, None)

    async def remote_receipt(self, user_id: str, room_id: str, event_id: str, thread_id: str | None) -> bool:
        """An m.read receipt another server sent for one of its users (the caller checked that the user
        is theirs and joined). False when the event is not one of the room's that we hold."""
        row = (await self._events.timeline_rows([event_id])).get(event_id)
        if row is None or row.room_id != room_id:
            return False
        await self._put(user_id, room_id, READ, row, thread_id)
        return True

    async def _check_joined(self, user_id: str, room_id: str) -> None:
        if not await self._visibility.is_joined(user_id, room_id):
            raise MatrixError(403, "M_FORBIDDEN", "You are not in this room.")

    async def _visible_event(self, user_id: str, room_id: str, event_id: str) -> TimelineRow:
        event = await self._events.get_event(event_id)
        row = (await self._events.timeline_rows([event_id])).get(event_id) if event else None
        if event is None or row is None or event.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found.")
        if not await self._visibility.filter_visible(user_id, [(event, row.state_group)], True):
            raise MatrixError(404, "M_NOT_FOUND", "Event not found.")
        return row

    async def _federate(
        self, user_id: str, room_id: str, receipt_type: str, event_id: str, thread_id: str | None
    ) -> None:
        """An m.receipt EDU (the spec's and Synapse's shape) to the room's other servers; private ones stay here."""
        if self.federation is None or receipt_type != READ:
            return
        data: dict[str, Any] = {"ts": int(time.time() * 1000)}
        if thread_id is not None:
            data["thread_id"] = thread_id
        content = {room_id: {READ: {user_id: {"event_ids": [event_id], "data": data}}}}
        await self.federation(room_id, "m.receipt", content, (room_id, user_id, thread_id))

    async def _put(
        self, user_id: str, room_id: str, receipt_type: str, row: TimelineRow, thread_id: str | None
    ) -> bool:
        """Store the receipt; True if it moved forward."""
        receipt = Receipt(
            room_id, receipt_type, user_id, thread_id, row.event_id, row.stream_ordering, int(time.time() * 1000)
        )
        stored = await self._store.put(receipt)
        if self.push is not None and thread_id in (None, "main"):
            # The counts go to zero at once (or to what is after the receipt); nothing is deleted here.
            await self.push.mark_read(user_id, room_id, row.stream_ordering)
        if stored is None or self.notifier is None:
            return stored is not None
        if receipt_type == READ_PRIVATE:
            self.notifier.notify_users([user_id])
        else:
            await self.notifier.notify_room(room_id)
        return True

    async def _set_fully_read(self, user_id: str, room_id: str, event_id: str) -> None:
        current = await self._account_data.room_data(user_id, room_id, FULLY_READ)
        if current is not None and current.get("event_id") == event_id:
            return
        await self._account_data.put_room(user_id, room_id, FULLY_READ, {"event_id": event_id})

    # -- for sync and unread counts -------------------------------------------------------------

    async def receipts_for_rooms(
        self, room_ids: list[str], after: int | None, upto: int, user_id: str
    ) -> dict[str, dict[str, Any]]:
        """room id -> content of an `m.receipt` EDU with the receipts written in (after, upto] (all
        current ones when `after` is None); private receipts only `user_id`'s own."""
        return await self._store.receipts_for_rooms(room_ids, after, upto, user_id)

    async def current_position(self) -> int:
        return await self._store.current_position()

    async def read_position(self, user_id: str, room_id: str) -> str | None:
        """The event id of the user's furthest m.read / m.read.private receipt on the room's main
        timeline (unthreaded or thread `main`), or None."""
        return await self._store.read_position(user_id, room_id)


def _check_thread_id(thread_id: str) -> None:
    """`main` or a thread root's event id. Whether the event is in that thread is not checked: that
    needs the relations, and a client receipting a reaction in a thread must not be refused."""
    if thread_id != MAIN_THREAD and (not thread_id.startswith("$") or len(thread_id.encode()) > MAX_THREAD_ID_BYTES):
        raise MatrixError(400, "M_INVALID_PARAM", "thread_id must be 'main' or an event id")

"""Typing notifications (client-server API, "Typing Notifications"): who is typing in which room, held
in memory with an expiry per user, and a serial position that moves on every change so sync can ask
which rooms changed since a token. Positions belong to this process: they start again at 0 when it
restarts (a token from before then is newer than any position, and is answered as such)."""

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.handlers.notifier import Notifier
from homeserver.storage.rooms import RoomStore

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 30_000
# Synapse's cap: a client that stops without saying so (a crash, a lost connection) is shown typing
# for at most this long.
MAX_TIMEOUT_MS = 120_000


class TypingHandler:
    def __init__(self, reactor: Any, rooms: RoomStore, notifier: Notifier | None = None) -> None:
        self._reactor = reactor
        self._rooms = rooms
        self.notifier = notifier
        self._position = 0
        self._typing: dict[str, dict[str, Any]] = {}  # room id -> user id -> its expiry (a DelayedCall)
        # room id -> the position of its last change. One integer per room that ever had a typist:
        # bounded by the rooms of the server, and needed to tell a sync that someone stopped.
        self._changed_at: dict[str, int] = {}
        # Told (room, user, typing) on every change, for the room's other servers (set by the app).
        self.federation: Callable[[str, str, bool], None] | None = None

    async def set_typing(
        self, requester: Requester, room_id: str, user_id: str, typing: bool, timeout_ms: int | None
    ) -> None:
        """A user says they are typing (for `timeout_ms`) or stopped: only for themselves, only in a
        room they are joined to (403 M_FORBIDDEN otherwise)."""
        if user_id != requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "Cannot set another user's typing state.")
        membership = await self._rooms.get_membership(room_id, user_id)
        if membership is None or membership[0] != "join":
            raise MatrixError(403, "M_FORBIDDEN", "You are not in this room.")
        if typing:
            self.started(room_id, user_id, DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms)
        else:
            self.stopped(room_id, user_id)

    def started(self, room_id: str, user_id: str, timeout_ms: int) -> None:
        """Mark the user typing for `timeout_ms` (capped at MAX_TIMEOUT_MS). Someone already typing
        only gets a new expiry: the list of typists did not change."""
        seconds = min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        typists = self._typing.setdefault(room_id, {})
        expiry = typists.get(user_id)
        if expiry is not None and expiry.active():
            expiry.reset(seconds)
            return
        typists[user_id] = self._reactor.callLater(seconds, self._expire, room_id, user_id)
        self._changed(room_id, user_id, True)

    def stopped(self, room_id: str, user_id: str) -> None:
        typists = self._typing.get(room_id)
        expiry = typists.pop(user_id, None) if typists is not None else None
        if expiry is None:
            return
        if expiry.active():
            expiry.cancel()
        self._forget_if_empty(room_id)
        self._changed(room_id, user_id, False)

    def _expire(self, room_id: str, user_id: str) -> None:
        typists = self._typing.get(room_id)
        if typists is None or typists.pop(user_id, None) is None:
            return
        self._forget_if_empty(room_id)
        self._changed(room_id, user_id, False)

    def _forget_if_empty(self, room_id: str) -> None:
        if not self._typing.get(room_id):
            self._typing.pop(room_id, None)

    def _changed(self, room_id: str, user_id: str, typing: bool) -> None:
        self._position += 1
        self._changed_at[room_id] = self._position
        if self.federation is not None:
            self.federation(room_id, user_id, typing)
        if self.notifier is not None:
            notified = defer.ensureDeferred(self.notifier.notify_room(room_id))
            notified.addErrback(lambda f: logger.error("waking syncs for typing in %s failed: %s", room_id, f.value))

    # -- for sync ------------------------------------------------------------------------------

    def typing_position(self) -> int:
        return self._position

    def typing_in_room(self, room_id: str) -> list[str]:
        """The user ids typing in the room now, in the order they started."""
        return list(self._typing.get(room_id, ()))

    def rooms_changed_since(self, position: int) -> set[str]:
        """The rooms whose typists changed after `position`. A position this process never reached
        (a token from before a restart) gets every room where someone is typing now."""
        if position > self._position:
            return set(self._typing)
        return {room_id for room_id, changed in self._changed_at.items() if changed > position}

"""Wakes long-polling /sync requests when something they may care about happens.

Writers call `notify_room` (an event in a room: every member's syncs wake) or `notify_users` (typing,
receipts, account data, to-device messages, device list changes for these users). A sync listens
*before* it computes, so nothing that lands in between is missed; if it had nothing to send it
waits on its listener, then computes again. Held in memory: listeners belong to this process.
When the server drains, `drain` ends every wait as if its timeout had passed, and later ones at once.
"""

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from twisted.internet import defer

RoomMembers = Callable[[str], Awaitable[Iterable[str]]]


class Listener:
    def __init__(self, notifier: "Notifier", user_id: str) -> None:
        self._notifier = notifier
        self.user_id = user_id
        self.deferred: defer.Deferred = defer.Deferred()

    async def wait(self, timeout_s: float) -> bool:
        """True when notified (possibly before this call), False when `timeout_s` passed first."""
        if not self.deferred.called and timeout_s > 0 and self._notifier.reactor is not None:
            timer = self._notifier.reactor.callLater(timeout_s, self._fire, False)
            try:
                return await self.deferred
            finally:
                if timer.active():
                    timer.cancel()
                self.close()
        self.close()
        return bool(self.deferred.called and self.deferred.result)

    def _fire(self, value: bool) -> None:
        if not self.deferred.called:
            self.deferred.callback(value)

    def close(self) -> None:
        self._notifier.forget(self)


class Notifier:
    def __init__(self, reactor: Any, room_members: RoomMembers) -> None:
        self.reactor = reactor
        self._room_members = room_members
        self._listeners: dict[str, set[Listener]] = defaultdict(set)
        self._draining = False

    @property
    def waiting(self) -> int:
        return sum(len(listeners) for listeners in self._listeners.values())

    def listen(self, user_id: str) -> Listener:
        listener = Listener(self, user_id)
        if self._draining:
            listener._fire(False)
        else:
            self._listeners[user_id].add(listener)
        return listener

    def drain(self) -> int:
        """End every wait now, as a timeout would (a sync then answers with what it has, a valid response),
        and every later one at once. Returns how many waits were ended."""
        self._draining = True
        listeners = [listener for user_listeners in self._listeners.values() for listener in user_listeners]
        for listener in listeners:
            listener._fire(False)
        return len(listeners)

    def forget(self, listener: Listener) -> None:
        listeners = self._listeners.get(listener.user_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[listener.user_id]

    async def notify_room(self, room_id: str) -> None:
        if self._listeners:
            self.notify_users(await self._room_members(room_id))

    def notify_users(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            for listener in list(self._listeners.get(user_id, ())):
                listener._fire(True)

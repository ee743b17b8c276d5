"""Every pusher of the server, held in memory and woken when its user gets a notification.

The pool runs in the server process, off the request path: persisting an event only tells the pool
which users it notified, and each of their pushers then reads and sends its own backlog. Pushers are
loaded when the server starts, so notifications that arrived while it was down are sent then.
"""

import logging
from collections.abc import Iterable
from typing import Any

from homeserver.handlers.pushers.gateway import GatewayClient
from homeserver.handlers.pushers.http_pusher import HttpPusher, RetryPolicy
from homeserver.handlers.pushers.notification import NotificationBuilder
from homeserver.http.address_filter import AddressFilter
from homeserver.storage.push import PushAction
from homeserver.storage.pushers import PusherKey, PusherRecord, PusherStore

logger = logging.getLogger(__name__)


class PusherPool:
    def __init__(
        self,
        store: PusherStore,
        notifications: NotificationBuilder,
        reactor: Any,
        address_filter: AddressFilter,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._store = store
        self._address_filter = address_filter
        self._notifications = notifications
        self._reactor = reactor
        self._retry = retry
        self._gateway: GatewayClient | None = None  # from start(): it needs the running reactor
        self._pushers: dict[str, dict[PusherKey, HttpPusher]] = {}

    async def start(self) -> None:
        self._gateway = GatewayClient(self._reactor, self._address_filter)
        self._reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        records = await self._store.all_pushers()
        for record in records:
            self._add(record)
        logger.info("loaded %d pushers", len(records))

    def stop(self) -> None:
        for pushers in self._pushers.values():
            for pusher in pushers.values():
                pusher.stop()
        self._pushers.clear()

    def notified(self, actions: Iterable[PushAction]) -> None:
        """New push actions are stored: wake the pushers of the users they notify."""
        for action in actions:
            if action.notify:
                for pusher in self._pushers.get(action.user_id, {}).values():
                    pusher.wake()

    def set(self, record: PusherRecord) -> None:
        """A pusher was created or changed: (re)start it from its stored position."""
        self.remove(record.key)
        if self._gateway is not None:
            self._add(record)

    def remove(self, key: PusherKey) -> None:
        pusher = self._pushers.get(key.user_id, {}).get(key)
        if pusher is not None:
            pusher.stop()
            self._forget(pusher)

    def remove_others(self, key: PusherKey) -> None:
        """Stop other users' pushers for the same app_id and pushkey (the device changed hands)."""
        for pushers in list(self._pushers.values()):
            for other in list(pushers.values()):
                if (other.key.app_id, other.key.pushkey) == (key.app_id, key.pushkey) and other.key != key:
                    self.remove(other.key)

    def _add(self, record: PusherRecord) -> None:
        assert self._gateway is not None
        pusher = HttpPusher(
            record, self._store, self._notifications, self._gateway, self._reactor, self._retry, self._forget
        )
        self._pushers.setdefault(record.user_id, {})[record.key] = pusher
        # Look at once: a backlog after a restart, or a notification stored while this one was set.
        pusher.wake()

    def _forget(self, pusher: HttpPusher) -> None:
        """Drop `pusher` if it is still the pool's one for its key (not already replaced)."""
        pushers = self._pushers.get(pusher.key.user_id, {})
        if pushers.get(pusher.key) is pusher:
            del pushers[pusher.key]
            if not pushers:
                del self._pushers[pusher.key.user_id]

"""Send-to-device messages: queued per device, handed to its syncs, deleted once acknowledged.

A message is delivered exactly once: /sync returns the device's messages up to a position, and when
the client comes back with a token at or past that position they are deleted. Messages to users of
other servers become one `m.direct_to_device` EDU per server, stored in the same transaction and kept
until that server acknowledges it (dropped when there is no federation, as in the admin CLI); messages
to unknown local devices are dropped, as nothing could ever collect them.
"""

import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from homeserver.core.ids import parse_user_id
from homeserver.core.requester import Requester
from homeserver.handlers.messages import txn_key
from homeserver.handlers.notifier import Notifier
from homeserver.storage.to_device import ToDeviceStore

logger = logging.getLogger(__name__)


class ToDeviceHandler:
    def __init__(self, server_name: str, store: ToDeviceStore, notifier: Notifier | None = None) -> None:
        self._server_name = server_name
        self._store = store
        self.notifier = notifier
        # Told which servers got stored EDUs, to wake their queues; None: remote messages are dropped (set by the app).
        self.federation: Callable[[Iterable[str]], None] | None = None

    async def send(
        self, requester: Requester, event_type: str, messages: dict[str, dict[str, dict[str, Any]]], txn_id: str
    ) -> None:
        """Queue `messages` (user -> device id or `*` -> content). A retry with the same transaction id
        and event type from the same device queues nothing again."""
        key = txn_key(requester, ("sendToDevice", event_type), txn_id)
        by_server: dict[str, dict[str, dict[str, Any]]] = {}
        for user_id, by_device in messages.items():
            by_server.setdefault(parse_user_id(user_id)[1], {})[user_id] = by_device
        local = by_server.pop(self._server_name, {})
        edus = []
        if by_server and self.federation is None:
            logger.info("dropping to-device messages from %s to other servers: no federation", requester.user_id)
        elif by_server:
            for server, users in sorted(by_server.items()):
                content = {
                    "sender": requester.user_id,
                    "type": event_type,
                    "message_id": secrets.token_urlsafe(12),
                    "messages": users,
                }
                edus.append((server, "m.direct_to_device", content))
        recipients = await self._store.add_messages(requester.user_id, event_type, local, key, edus)
        if recipients is not None and edus and self.federation is not None:
            self.federation([server for server, _, _ in edus])
        if recipients and self.notifier is not None:
            self.notifier.notify_users(recipients)

    async def messages_for(
        self, user_id: str, device_id: str, after: int, upto: int, limit: int
    ) -> tuple[list[dict], int]:
        """The device's messages ({type, sender, content}) at positions in (after, upto], oldest first,
        at most `limit`; and the position of the last one returned, or `upto` if none or all were."""
        return await self._store.messages_for(user_id, device_id, after, upto, limit)

    async def delete_up_to(self, user_id: str, device_id: str, upto: int) -> None:
        """The device acknowledged every message up to `upto`: delete them."""
        await self._store.delete_up_to(user_id, device_id, upto)

    async def current_position(self) -> int:
        return await self._store.current_position()

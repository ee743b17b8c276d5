"""PUT /send/{txnId}: a transaction of PDUs and EDUs from another server.

PDUs go through EventIntake, grouped by their room's version; each gets its own result. EDUs are
routed to the handlers that local users' own actions drive (typing, receipts, to-device, device
lists, presence; presence EDUs are ignored while presence is disabled). One that is malformed, names a
user of another server, or a room the sender has no one joined to is dropped without failing the
transaction. A retried transaction gets the first answer again.
"""

import logging
from collections.abc import Mapping
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.event_signing import server_of
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.handlers.federation.event_intake import EventIntake
from homeserver.handlers.receipts import ReceiptHandler
from homeserver.handlers.typing import DEFAULT_TIMEOUT_MS, TypingHandler
from homeserver.storage.device_lists import DeviceListStore
from homeserver.storage.events import TxnKey
from homeserver.storage.federation_inbox import FederationInboxStore
from homeserver.storage.rooms import RoomStore
from homeserver.storage.to_device import ToDeviceStore

logger = logging.getLogger(__name__)

MAX_PDUS = 50  # server-server-api: "limited to 50 PDUs and 100 EDUs"
MAX_EDUS = 100


class TransactionHandler:
    def __init__(
        self,
        server_name: str,
        intake: EventIntake,
        inbox: FederationInboxStore,
        rooms: RoomStore,
        typing: TypingHandler,
        receipts: ReceiptHandler,
        to_device: ToDeviceStore,
        device_lists: DeviceListStore,
    ) -> None:
        self._server_name = server_name
        self._intake = intake
        self._inbox = inbox
        self._rooms = rooms
        self._typing = typing
        self._receipts = receipts
        self._to_device = to_device
        self._device_lists = device_lists
        self.notify_users: Any = None  # wakes local users' syncs for to-device messages (set by the app)
        self.remote_keys_changed: Any = None  # drops a remote user's cached keys (set by the app)
        self.presence: Any = None  # PresenceHandler, set by the app only when presence is enabled

    async def on_send(self, origin: str, txn_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        pdus, edus = body.get("pdus", []), body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise MatrixError(400, "M_BAD_JSON", "'pdus' and 'edus' must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise MatrixError(400, "M_BAD_JSON", f"At most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs per transaction")
        previous = await self._inbox.get_response(origin, txn_id)
        if previous is not None:
            return previous
        results: dict[str, str | None] = {}
        for room_version, group in (await self._by_room_version(pdus, results)).items():
            results.update(await self._intake.intake(origin, room_version, group))
        for edu in edus:
            try:
                await self._edu(origin, edu)
            except Exception:  # an EDU never fails the transaction: log it and carry on
                logger.exception("EDU from %s failed", origin)
        response = {"pdus": {eid: {} if err is None else {"error": err} for eid, err in results.items()}}
        await self._inbox.put_response(origin, txn_id, response)
        return response

    async def _by_room_version(self, pdus: list[Any], results: dict[str, str | None]) -> dict[RoomVersion, list]:
        """The PDUs of rooms we are in, by their room version; the rest get an error result."""
        grouped: dict[RoomVersion, list] = {}
        for pdu in pdus:
            room_id = pdu.get("room_id") if isinstance(pdu, Mapping) else None
            room = await self._rooms.get_room(room_id) if isinstance(room_id, str) else None
            if room is None:
                event_id = pdu.get("event_id") if isinstance(pdu, Mapping) else None
                if isinstance(event_id, str):  # v3+ ids are computed from the PDU, with its room's version
                    results[event_id] = "This server is not in that room"
                continue
            grouped.setdefault(KNOWN_ROOM_VERSIONS[room.room_version], []).append(pdu)
        return grouped

    async def _joined(self, room_id: Any, user_id: Any, origin: str) -> bool:
        """Whether `user_id` is a user of `origin` joined to `room_id`."""
        if not isinstance(room_id, str) or not isinstance(user_id, str) or server_of(user_id) != origin:
            return False
        membership = await self._rooms.get_membership(room_id, user_id)
        return membership is not None and membership[0] == "join"

    async def _edu(self, origin: str, edu: Any) -> None:
        if not isinstance(edu, Mapping) or not isinstance(edu.get("content"), Mapping):
            return
        edu_type, content = edu.get("edu_type"), edu["content"]
        if edu_type == "m.typing":
            room_id, user_id = content.get("room_id"), content.get("user_id")
            if not await self._joined(room_id, user_id, origin):
                return
            if content.get("typing") is True:
                timeout = content.get("timeout")
                self._typing.started(room_id, user_id, timeout if isinstance(timeout, int) else DEFAULT_TIMEOUT_MS)
            else:
                self._typing.stopped(room_id, user_id)
        elif edu_type == "m.receipt":
            await self._receipts_edu(origin, content)
        elif edu_type == "m.direct_to_device":
            await self._to_device_edu(origin, content)
        elif edu_type in ("m.device_list_update", "m.signing_key_update"):
            await self._device_list_edu(origin, content)
        elif edu_type == "m.presence":
            if self.presence is not None and isinstance(content.get("push"), list):
                await self.presence.remote_update(origin, content["push"])
        else:
            logger.debug("ignoring EDU %s from %s", edu_type, origin)

    async def _receipts_edu(self, origin: str, content: Mapping[str, Any]) -> None:
        for room_id, by_type in content.items():
            read = by_type.get("m.read") if isinstance(by_type, Mapping) else None
            for user_id, receipt in (read or {}).items() if isinstance(read, Mapping) else ():
                if not isinstance(receipt, Mapping) or not await self._joined(room_id, user_id, origin):
                    continue
                event_ids = receipt.get("event_ids")
                data = receipt.get("data")
                thread_id = data.get("thread_id") if isinstance(data, Mapping) else None
                if isinstance(event_ids, list) and event_ids and isinstance(event_ids[0], str):
                    await self._receipts.remote_receipt(
                        user_id, room_id, event_ids[0], thread_id if isinstance(thread_id, str) else None
                    )

    async def _device_list_edu(self, origin: str, content: Mapping[str, Any]) -> None:
        """A remote user's devices changed: our users who share a room with them see the user in
        `device_lists.changed` and query the keys again (a cached copy of their keys is dropped)."""
        user_id = content.get("user_id")
        if not isinstance(user_id, str) or server_of(user_id) != origin:
            return
        if self.remote_keys_changed is not None:
            self.remote_keys_changed(user_id)
        sharing = await self._rooms.users_sharing_rooms(user_id)
        if not sharing:
            return
        await self._device_lists.record_change(user_id)
        if self.notify_users is not None:
            self.notify_users(sharing)

    async def _to_device_edu(self, origin: str, content: Mapping[str, Any]) -> None:
        sender, event_type = content.get("sender"), content.get("type")
        message_id, messages = content.get("message_id"), content.get("messages")
        if not (isinstance(sender, str) and server_of(sender) == origin and isinstance(event_type, str)):
            return
        if not isinstance(message_id, str) or not isinstance(messages, Mapping):
            return
        local = {
            user_id: dict(by_device)
            for user_id, by_device in messages.items()
            if isinstance(user_id, str) and server_of(user_id) == self._server_name and isinstance(by_device, Mapping)
        }
        # The message id makes a resent EDU a no-op, as a client's transaction id does.
        key = TxnKey(sender, "", f"federation:{origin}", message_id)
        recipients = await self._to_device.add_messages(sender, event_type, local, key)
        if recipients and self.notify_users is not None:
            self.notify_users(recipients)

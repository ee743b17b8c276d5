"""Sending events into a room: messages, state, redactions; idempotent per device and txn id."""

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from homeserver.core.auth.power_levels import PowerLevels
from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.handlers.room_events import RoomEventSender
from homeserver.storage.events import DuplicateTransaction, EventStore, TxnKey
from homeserver.storage.rooms import RoomStore

# Membership changes go through their own endpoints, which apply the checks a client expects.
MEMBERSHIP_EVENT = "m.room.member"
REDACTION_EVENT = "m.room.redaction"
# Keeps (user, device, txn id) within PostgreSQL's limit for an index row, with room to spare.
MAX_TXN_ID_BYTES = 1024
_SCOPE_CHARS = 16


def txn_key(requester: Requester, scope: tuple[str, ...], txn_id: str) -> TxnKey:
    """The spec makes a request a retransmission only if both its transaction id and its path are the
    same, so the key carries a fixed-length digest of the path's parameters beside the client's id."""
    if len(txn_id.encode()) > MAX_TXN_ID_BYTES:
        raise MatrixError(400, "M_INVALID_PARAM", f"Transaction ids may be at most {MAX_TXN_ID_BYTES} bytes")
    digest = hashlib.sha256(json.dumps(scope).encode()).hexdigest()[:_SCOPE_CHARS]
    return TxnKey(requester.user_id, requester.device_id, digest, txn_id)


class MessageHandler:
    def __init__(self, sender: RoomEventSender, events: EventStore, rooms: RoomStore) -> None:
        self._sender = sender
        self._events = events
        self._rooms = rooms
        self.active: Callable[[str], None] | None = None  # told who sent something (presence), set by the app

    async def send(
        self, requester: Requester, room_id: str, event_type: str, content: Mapping[str, Any], txn_id: str
    ) -> str:
        """Send a message event; the same (device, path, txn id) always answers with the first event's id."""
        key = txn_key(requester, ("send", room_id, event_type), txn_id)
        existing = await self._events.get_event_id_for_txn(key)
        if existing is not None:
            return existing
        if event_type == REDACTION_EVENT:
            await self._check_redaction_content(requester, room_id, content)
        try:
            persisted = await self._sender.send(room_id, requester.user_id, event_type, content, txn_key=key)
        except DuplicateTransaction as dup:
            return dup.event_id
        if self.active is not None:
            self.active(requester.user_id)
        return persisted.event.event_id

    async def set_state(
        self, requester: Requester, room_id: str, event_type: str, state_key: str, content: Mapping[str, Any]
    ) -> str:
        if event_type == MEMBERSHIP_EVENT:
            raise MatrixError(
                400, "M_BAD_JSON", "Use the membership endpoints (join, invite, leave, kick, ban) for m.room.member"
            )
        if event_type == "m.room.canonical_alias":
            await self._check_canonical_alias(room_id, content)
        if event_type == REDACTION_EVENT:
            await self._check_redaction_content(requester, room_id, content)
        persisted = await self._sender.send(room_id, requester.user_id, event_type, content, state_key)
        if self.active is not None:
            self.active(requester.user_id)
        return persisted.event.event_id

    async def _check_canonical_alias(self, room_id: str, content: Mapping[str, Any]) -> None:
        """The spec asks servers to refuse canonical aliases that do not point at the room."""
        aliases = [content["alias"]] if content.get("alias") is not None else []
        alt = content.get("alt_aliases", [])
        if not isinstance(alt, (list, tuple)):
            raise MatrixError(400, "M_INVALID_PARAM", "alt_aliases must be a list")
        for alias in [*aliases, *alt]:
            if not isinstance(alias, str) or not alias.startswith("#") or ":" not in alias:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid alias {alias!r}")
            found = await self._rooms.get_alias(alias)
            if found is None or found[0] != room_id:
                raise MatrixError(400, "M_BAD_ALIAS", f"{alias} does not point to this room")

    async def redact(self, requester: Requester, room_id: str, event_id: str, reason: str | None, txn_id: str) -> str:
        """Redact an event the requester sent, or any event when they hold the redact power level."""
        key = txn_key(requester, ("redact", room_id, event_id), txn_id)
        existing = await self._events.get_event_id_for_txn(key)
        if existing is not None:
            return existing
        await self._check_may_redact(requester, room_id, event_id)
        content = {"reason": reason} if reason else {}
        try:
            persisted = await self._sender.send(
                room_id, requester.user_id, "m.room.redaction", content, redacts=event_id, txn_key=key
            )
        except DuplicateTransaction as dup:
            return dup.event_id
        return persisted.event.event_id

    async def _check_may_redact(self, requester: Requester, room_id: str, event_id: str) -> None:
        """The event is in the room, and the requester sent it or holds the redact power level."""
        original = await self._events.get_event(event_id)
        if original is None or original.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        if original.sender != requester.user_id:
            _, room_version = await self._sender.get_room(room_id)
            auth_state = await self._sender.load_state(
                (await self._events.get_forward_extremities(room_id))[0].state_group,
                {("m.room.power_levels", ""), ("m.room.create", "")},
            )
            power = PowerLevels.from_state(room_version, auth_state)
            if power.user_level(requester.user_id) < power.named_level("redact"):
                raise MatrixError(403, "M_FORBIDDEN", "You need the redact power level to redact others' events")

    async def _check_redaction_content(self, requester: Requester, room_id: str, content: Mapping[str, Any]) -> None:
        """From v11 a redaction names its target in its content, so one sent through /send or /state
        redacts as one sent through /redact does, and needs the same permission."""
        _, room_version = await self._sender.get_room(room_id)
        redacts = content.get("redacts")
        if room_version.redacts_in_content and isinstance(redacts, str):
            await self._check_may_redact(requester, room_id, redacts)

"""Sending events into a room: messages, state, redactions; idempotent per device and txn id."""

from collections.abc import Mapping
from typing import Any

from homeserver.core.auth.power_levels import PowerLevels
from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.handlers.room_events import RoomEventSender
from homeserver.storage.events import DuplicateTransaction, EventStore, TxnKey
from homeserver.storage.rooms import RoomStore

# Membership changes go through their own endpoints, which apply the checks a client expects.
MEMBERSHIP_EVENT = "m.room.member"


class MessageHandler:
    def __init__(self, sender: RoomEventSender, events: EventStore, rooms: RoomStore) -> None:
        self._sender = sender
        self._events = events
        self._rooms = rooms

    async def send(
        self, requester: Requester, room_id: str, event_type: str, content: Mapping[str, Any], txn_id: str
    ) -> str:
        """Send a message event; the same (device, txn id) always answers with the first event's id."""
        key = TxnKey(requester.user_id, requester.device_id, txn_id)
        existing = await self._events.get_event_id_for_txn(key)
        if existing is not None:
            return existing
        try:
            persisted = await self._sender.send(room_id, requester.user_id, event_type, content, txn_key=key)
        except DuplicateTransaction as dup:
            return dup.event_id
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
        persisted = await self._sender.send(room_id, requester.user_id, event_type, content, state_key)
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
        key = TxnKey(requester.user_id, requester.device_id, txn_id)
        existing = await self._events.get_event_id_for_txn(key)
        if existing is not None:
            return existing
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
        content = {"reason": reason} if reason else {}
        try:
            persisted = await self._sender.send(
                room_id, requester.user_id, "m.room.redaction", content, redacts=event_id, txn_key=key
            )
        except DuplicateTransaction as dup:
            return dup.event_id
        return persisted.event.event_id

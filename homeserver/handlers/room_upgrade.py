"""POST /rooms/{roomId}/upgrade: a replacement room of another version, as the spec's "Room
Upgrades" module describes (client-server-api/modules/room_upgrades.md).

The new room is made through createRoom, so it exists whole or not at all; what follows (moving
aliases, the tombstone, muting the old room) are separate steps, each of which the old room can
live without if a later one fails.
"""

import copy
import logging
from collections.abc import Mapping
from typing import Any

from homeserver.core.auth.power_levels import PowerLevels
from homeserver.core.errors import MatrixError
from homeserver.core.events import Event
from homeserver.core.frozen_json import thaw
from homeserver.core.requester import Requester
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.handlers.room_creation import CreateRoomRequest, RoomCreationHandler
from homeserver.handlers.room_events import RoomEventSender
from homeserver.storage.events import EventStore
from homeserver.storage.rooms import AliasExists, RoomStore

logger = logging.getLogger(__name__)

TOMBSTONE = "m.room.tombstone"
POWER_LEVELS = "m.room.power_levels"
CANONICAL_ALIAS = "m.room.canonical_alias"
# The spec's recommended transferable state, copied as is; power levels are handled apart.
TRANSFERRED = (
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    CANONICAL_ALIAS,
)
# The spec: the old room's events_default and invite go to at least this (or users_default + 1).
MUTED_LEVEL = 50


class RoomUpgradeHandler:
    def __init__(
        self, creation: RoomCreationHandler, sender: RoomEventSender, rooms: RoomStore, events: EventStore
    ) -> None:
        self._creation = creation
        self._sender = sender
        self._rooms = rooms
        self._events = events

    async def upgrade(
        self, requester: Requester, room_id: str, new_version: str, additional_creators: list[str] | None = None
    ) -> str:
        """Returns the replacement room's id."""
        target = KNOWN_ROOM_VERSIONS.get(new_version)
        if target is None:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"Room version {new_version!r} is not supported")
        old, old_version = await self._sender.get_room(room_id)  # 404 M_NOT_FOUND
        user_id = requester.user_id
        membership = await self._rooms.get_membership(room_id, user_id)
        if membership is None or membership[0] != "join":
            raise MatrixError(403, "M_FORBIDDEN", "You are not in the room")
        state = await self._current_state(room_id)
        power = PowerLevels.from_state(old_version, state)
        if power.user_level(user_id) < power.send_level(TOMBSTONE, True):
            raise MatrixError(403, "M_FORBIDDEN", "You do not have the power to upgrade this room")

        extremities = await self._events.get_forward_extremities(room_id)
        creation_content: dict[str, Any] = {"predecessor": {"room_id": room_id, "event_id": extremities[0].event_id}}
        create = state.get(("m.room.create", ""))
        room_type = create.content.get("type") if create is not None else None
        if isinstance(room_type, str):
            creation_content["type"] = room_type
        creators = {user_id}
        if additional_creators and target.privileged_room_creators:
            # The spec: additional creators are not carried over, only those the request names.
            creation_content["additional_creators"] = additional_creators
            creators.update(additional_creators)

        old_levels = thaw(state[(POWER_LEVELS, "")].content) if (POWER_LEVELS, "") in state else None
        final_levels = _levels_for_new_room(old_levels, power.user_level(user_id), user_id, creators, target)
        # While the copied state goes in, the upgrader may need more power than they keep after.
        setup_levels = _with_setup_power(final_levels, user_id, target.privileged_room_creators)
        join_rule = _content(state, "m.room.join_rules").get("join_rule")
        initial_state = [
            {"type": event_type, "state_key": "", "content": thaw(state[(event_type, "")].content)}
            for event_type in TRANSFERRED
            if (event_type, "") in state
        ]
        if ("m.room.guest_access", "") not in state and join_rule != "public":
            # The private_chat preset lets guests in; the old room, lacking the event, did not.
            forbidden = {"guest_access": "forbidden"}
            initial_state.append({"type": "m.room.guest_access", "state_key": "", "content": forbidden})
        new_room_id, _ = await self._creation.create_room(
            requester,
            CreateRoomRequest(
                preset="public_chat" if join_rule == "public" else "private_chat",
                visibility="public" if old.is_public else "private",
                initial_state=initial_state,
                power_level_content_override=setup_levels,
                creation_content=creation_content,
                room_version=new_version,
            ),
        )
        if setup_levels != final_levels:
            await self._sender.send(new_room_id, user_id, POWER_LEVELS, final_levels, "")

        await self._move_aliases(room_id, new_room_id)
        await self._sender.send(
            room_id,
            user_id,
            TOMBSTONE,
            {"body": "This room has been replaced", "replacement_room": new_room_id},
            "",
        )
        await self._best_effort(room_id, user_id, CANONICAL_ALIAS, {} if _content(state, CANONICAL_ALIAS) else None)
        await self._best_effort(room_id, user_id, POWER_LEVELS, _muted(old_levels))
        return new_room_id

    async def _current_state(self, room_id: str) -> dict[tuple[str, str], Event]:
        ids = await self._rooms.current_state_ids(room_id, ("m.room.create", POWER_LEVELS, *TRANSFERRED))
        found = await self._events.get_events(ids.values())
        return {key: found[event_id] for key, event_id in ids.items() if event_id in found}

    async def _move_aliases(self, old_room_id: str, new_room_id: str) -> None:
        for alias in await self._rooms.aliases_of_room(old_room_id):
            found = await self._rooms.get_alias(alias)
            if found is None or found[0] != old_room_id:
                continue  # deleted or moved meanwhile
            await self._rooms.delete_alias(alias)
            try:
                await self._rooms.create_alias(alias, new_room_id, found[1])
            except AliasExists:  # someone took the name in between: theirs now
                logger.info("alias %s was taken while moving it to %s", alias, new_room_id)

    async def _best_effort(self, room_id: str, user_id: str, event_type: str, content: dict | None) -> None:
        """Tidying the old room after the tombstone: the upgrade stands even if the user may not."""
        if content is None:
            return
        try:
            await self._sender.send(room_id, user_id, event_type, content, "")
        except MatrixError as e:
            logger.info("room %s upgraded, but %s could not update its %s: %s", room_id, user_id, event_type, e.msg)


def _content(state: Mapping[tuple[str, str], Event], event_type: str) -> Mapping[str, Any]:
    event = state.get((event_type, ""))
    return event.content if event is not None else {}


def _levels_for_new_room(
    old_levels: dict[str, Any] | None, user_level: float, user_id: str, creators: set[str], target: RoomVersion
) -> dict[str, Any] | None:
    """The old room's power levels as the new room keeps them, the upgrader keeping their level.
    None leaves createRoom's defaults."""
    if old_levels is None:
        return None
    levels = copy.deepcopy(old_levels)
    users = levels.get("users")
    users = dict(users) if isinstance(users, dict) else {}
    if target.privileged_room_creators:
        # From v12 the creators are above every level and must not be listed.
        users = {u: level for u, level in users.items() if u not in creators}
    elif user_level == float("inf"):
        # An old-room creator (v12+) moving to a version without unlimited power: the top level.
        users[user_id] = max([100, *_numbers(levels)])
    levels["users"] = users
    return levels


def _with_setup_power(levels: dict[str, Any] | None, user_id: str, privileged: bool) -> dict[str, Any] | None:
    """The levels with the upgrader at the top while the copied state goes in (v12+ creators are
    above every level already)."""
    if levels is None or privileged:
        return levels
    top = max([100, *_numbers(levels)])
    if levels["users"].get(user_id) == top:
        return levels
    return {**levels, "users": {**levels["users"], user_id: top}}


def _numbers(levels: Mapping[str, Any]) -> list[int]:
    """Every level the content names, to find the one that lets the upgrader send anything."""
    values = [v for v in levels.values() if isinstance(v, int)]
    for nested in ("events", "users", "notifications"):
        inner = levels.get(nested)
        if isinstance(inner, Mapping):
            values.extend(v for v in inner.values() if isinstance(v, int))
    return values


def _muted(levels: dict[str, Any] | None) -> dict[str, Any] | None:
    """The old room's power levels with sending and inviting left to moderators, or None if they
    already are."""
    if levels is None:
        return None
    users_default = levels.get("users_default", 0)
    floor = max(MUTED_LEVEL, users_default + 1 if isinstance(users_default, int) else 0)
    muted = dict(levels)
    for name, default in (("events_default", 0), ("invite", 0)):
        level = levels.get(name, default)
        if not isinstance(level, int) or level < floor:
            muted[name] = floor
    return muted if muted != levels else None

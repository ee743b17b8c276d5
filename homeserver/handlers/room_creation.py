"""createRoom: the initial events of a new room, authorised in memory and persisted in one
transaction, so a room exists whole or not at all."""

import copy
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from homeserver.core.auth.errors import AuthError
from homeserver.core.errors import MatrixError
from homeserver.core.event_builder import random_room_id
from homeserver.core.events import Event
from homeserver.core.ids import parse_user_id
from homeserver.core.requester import Requester
from homeserver.core.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.handlers.profiles import ProfileHandler
from homeserver.handlers.room_events import DraftState, RoomEventSender
from homeserver.storage.events import AliasTaken, EventStore, NewRoom
from homeserver.storage.rooms import RoomStore

logger = logging.getLogger(__name__)

PRESETS = {
    "private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "trusted_private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "public_chat": {"join_rule": "public", "history_visibility": "shared", "guest_access": None},
}


@dataclass
class CreateRoomRequest:
    preset: str | None = None
    visibility: str = "private"
    name: str | None = None
    topic: str | None = None
    room_alias_name: str | None = None
    invite: list[str] = field(default_factory=list)
    initial_state: list[dict[str, Any]] = field(default_factory=list)
    power_level_content_override: dict[str, Any] | None = None
    creation_content: dict[str, Any] | None = None
    room_version: str | None = None
    is_direct: bool = False


def default_power_levels(room_version: RoomVersion, creator: str, preset: str, invitees: list[str]) -> dict:
    users: dict[str, int] = {}
    if not room_version.privileged_room_creators:
        users[creator] = 100  # from v12 creators have unlimited power and are not listed
    if preset == "trusted_private_chat" and not room_version.privileged_room_creators:
        users.update(dict.fromkeys(invitees, 100))  # from v12 they are additional creators instead
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            # Upgrading a v12 room is for its creators, whose power is above any listed level.
            "m.room.tombstone": 150 if room_version.privileged_room_creators else 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50 if preset == "public_chat" else 0,
        "historical": 100,
    }


class RoomCreationHandler:
    def __init__(self, sender: RoomEventSender, events: EventStore, rooms: RoomStore, profiles: ProfileHandler) -> None:
        self._sender = sender
        self._events = events
        self._rooms = rooms
        self._profiles = profiles
        # MembershipHandler.invite, which asks a remote invitee's server to sign (set by the app; None in the
        # admin CLI, which has no federation).
        self.invite_remote: Callable[[Requester, str, str], Awaitable[None]] | None = None

    async def create_room(self, requester: Requester, request: CreateRoomRequest) -> tuple[str, str | None]:
        """Returns the room id and its alias, if one was asked for."""
        server_name = self._sender.server_name
        version_id = request.room_version or DEFAULT_ROOM_VERSION
        room_version = KNOWN_ROOM_VERSIONS.get(version_id)
        if room_version is None:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"Room version {version_id!r} is not supported")
        if request.visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
        preset = request.preset or ("public_chat" if request.visibility == "public" else "private_chat")
        if preset not in PRESETS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown preset {preset!r}")
        remote_invitees = []
        for invitee in request.invite:
            try:
                _, server = parse_user_id(invitee)
            except ValueError:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user id to invite: {invitee!r}") from None
            if server != server_name:
                if self.invite_remote is None:
                    raise MatrixError(400, "M_INVALID_PARAM", "Users of other servers cannot be invited from here")
                remote_invitees.append(invitee)
        alias = await self._check_alias(request.room_alias_name)
        creator = requester.user_id
        draft = DraftState()
        room_id = None if room_version.room_id_is_create_event_id else random_room_id(server_name)
        built: list[Event] = []

        def add(event_type: str, content: dict[str, Any], state_key: str | None = "", sender: str = creator) -> None:
            try:
                event = self._sender.build_on_draft(
                    draft, room_version, room_id, sender, event_type, content, state_key
                )
            except AuthError as e:  # the request asks for a room its own rules forbid
                raise MatrixError(400, "M_INVALID_ROOM_STATE", f"Cannot send {event_type}: {e.msg}") from None
            built.append(event)

        create_content = dict(request.creation_content or {})
        create_content.pop("room_version", None)
        create_content.pop("creator", None)  # the spec: the server overwrites both (v11+ drops creator)
        if not room_version.implicit_room_creator:
            create_content["creator"] = creator
        create_content["room_version"] = version_id
        if preset == "trusted_private_chat" and room_version.privileged_room_creators and request.invite:
            # The spec: invitees get the creator's power, which from v12 only creators have.
            extra = create_content.get("additional_creators", [])
            if isinstance(extra, list):
                create_content["additional_creators"] = list(dict.fromkeys([*extra, *request.invite]))
        add("m.room.create", create_content)
        room_id = built[0].room_id
        add("m.room.member", {"membership": "join", **(await self._profiles.member_profile(creator))}, creator)
        power_levels = default_power_levels(room_version, creator, preset, request.invite)
        if request.power_level_content_override:
            power_levels.update(copy.deepcopy(request.power_level_content_override))
        add("m.room.power_levels", power_levels)
        if alias:
            add("m.room.canonical_alias", {"alias": alias})
        settings = PRESETS[preset]
        add("m.room.join_rules", {"join_rule": settings["join_rule"]})
        add("m.room.history_visibility", {"history_visibility": settings["history_visibility"]})
        if settings["guest_access"]:
            add("m.room.guest_access", {"guest_access": settings["guest_access"]})
        for state in request.initial_state:
            add(state["type"], dict(state.get("content", {})), state.get("state_key", ""))
        if request.name is not None:
            add("m.room.name", {"name": request.name})
        if request.topic is not None:
            plain = {"body": request.topic, "mimetype": "text/plain"}
            add("m.room.topic", {"topic": request.topic, "m.topic": {"m.text": [plain]}})
        for invitee in request.invite:
            if invitee in remote_invitees:
                continue  # their server signs the invite: after the room exists
            content: dict[str, Any] = {"membership": "invite"}
            if request.is_direct:
                content["is_direct"] = True
            add("m.room.member", content, invitee)
        new_room = NewRoom(room_id, version_id, creator, request.visibility == "public", alias)
        items = [(e, {(e.type, e.state_key): e.event_id} if e.is_state() else None) for e in built]
        try:
            persisted = await self._events.persist_batch(items, None, new_room=new_room)
        except AliasTaken:
            raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken") from None
        await self._sender.persisted(room_id, persisted)
        await self._invite_remote(requester, room_id, remote_invitees)
        return room_id, alias

    async def _invite_remote(self, requester: Requester, room_id: str, invitees: list[str]) -> None:
        """The room exists whatever their servers answer, so a failed invite is logged, not raised: the
        creator sees who was invited in the room and can invite again (as Synapse does)."""
        assert self.invite_remote is not None or not invitees
        for invitee in invitees:
            try:
                await self.invite_remote(requester, room_id, invitee)
            except MatrixError as e:
                logger.warning("createRoom %s: inviting %s failed: %s %s", room_id, invitee, e.errcode, e.msg)

    async def _check_alias(self, localpart: str | None) -> str | None:
        if localpart is None:
            return None
        if not localpart or ":" in localpart or "#" in localpart or any(c.isspace() for c in localpart):
            raise MatrixError(400, "M_INVALID_PARAM", "room_alias_name must be a bare localpart without ':' or '#'")
        alias = f"#{localpart}:{self._sender.server_name}"
        if len(alias.encode()) > 255:
            raise MatrixError(400, "M_INVALID_PARAM", "Room alias is too long")
        if await self._rooms.get_alias(alias):
            raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")
        return alias

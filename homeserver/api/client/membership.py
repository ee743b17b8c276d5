"""Membership endpoints: join, invite, leave, forget, kick, ban, unban, knock, joined_rooms."""

from homeserver.core.requester import Requester
from homeserver.handlers.membership import MembershipHandler
from homeserver.http.request import ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint
from homeserver.storage.rooms import RoomStore


class _MembershipEndpoint(Endpoint):
    method = "POST"

    def __init__(self, membership: MembershipHandler) -> None:
        self._membership = membership


class JoinRoomById(_MembershipEndpoint):
    path = "/_matrix/client/v3/rooms/{room_id}/join"

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        reason = optional_field(request.json_object(empty_ok=True), "reason")
        return 200, {"room_id": await self._membership.join(requester, room_id, reason)}


class JoinRoom(_MembershipEndpoint):
    path = "/_matrix/client/v3/join/{room_id_or_alias}"

    async def handle(self, request: ApiRequest, room_id_or_alias: str) -> tuple[int, dict]:
        requester = await request.require_user()
        reason = optional_field(request.json_object(empty_ok=True), "reason")
        # Servers to join a room we do not hold through: `via` (v1.12), `server_name` (older clients).
        via = request.query.get("via", []) + request.query.get("server_name", [])
        return 200, {"room_id": await self._membership.join(requester, room_id_or_alias, reason, via)}


class Knock(_MembershipEndpoint):
    path = "/_matrix/client/v3/knock/{room_id_or_alias}"

    async def handle(self, request: ApiRequest, room_id_or_alias: str) -> tuple[int, dict]:
        requester = await request.require_user()
        reason = optional_field(request.json_object(empty_ok=True), "reason")
        via = request.query.get("via", []) + request.query.get("server_name", [])
        return 200, {"room_id": await self._membership.knock(requester, room_id_or_alias, reason, via)}


class Leave(_MembershipEndpoint):
    path = "/_matrix/client/v3/rooms/{room_id}/leave"

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        await self._membership.leave(requester, room_id, optional_field(request.json_object(empty_ok=True), "reason"))
        return 200, {}


class Forget(_MembershipEndpoint):
    path = "/_matrix/client/v3/rooms/{room_id}/forget"

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        await self._membership.forget(await request.require_user(), room_id)
        return 200, {}


class _TargetedEndpoint(_MembershipEndpoint):
    """invite, kick, ban, unban: a target user id and an optional reason."""

    action = ""

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester: Requester = await request.require_user()
        body = request.json_object()
        user_id = require_field(body, "user_id")
        reason = optional_field(body, "reason")
        await getattr(self._membership, self.action)(requester, room_id, user_id, reason)
        return 200, {}


class Invite(_TargetedEndpoint):
    path, action = "/_matrix/client/v3/rooms/{room_id}/invite", "invite"


class Kick(_TargetedEndpoint):
    path, action = "/_matrix/client/v3/rooms/{room_id}/kick", "kick"


class Ban(_TargetedEndpoint):
    path, action = "/_matrix/client/v3/rooms/{room_id}/ban", "ban"


class Unban(_TargetedEndpoint):
    path, action = "/_matrix/client/v3/rooms/{room_id}/unban", "unban"


class JoinedRooms(Endpoint):
    method, path = "GET", "/_matrix/client/v3/joined_rooms"

    def __init__(self, rooms: RoomStore) -> None:
        self._rooms = rooms

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        return 200, {"joined_rooms": await self._rooms.rooms_for_user(requester.user_id, ("join",))}


def endpoints(membership: MembershipHandler, rooms: RoomStore) -> list[Endpoint]:
    return [
        JoinRoomById(membership),
        JoinRoom(membership),
        Knock(membership),
        Leave(membership),
        Forget(membership),
        Invite(membership),
        Kick(membership),
        Ban(membership),
        Unban(membership),
        JoinedRooms(rooms),
    ]

"""POST /rooms/{roomId}/upgrade."""

from homeserver.core.errors import MatrixError
from homeserver.handlers.room_upgrade import RoomUpgradeHandler
from homeserver.http.request import ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint


class UpgradeRoom(Endpoint):
    method, path = "POST", "/_matrix/client/v3/rooms/{room_id}/upgrade"

    def __init__(self, upgrades: RoomUpgradeHandler) -> None:
        self._upgrades = upgrades

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        new_version = require_field(body, "new_version")
        additional_creators = optional_field(body, "additional_creators", list, [])
        if not all(isinstance(user_id, str) for user_id in additional_creators):
            raise MatrixError(400, "M_INVALID_PARAM", "additional_creators must be a list of user ids")
        replacement = await self._upgrades.upgrade(requester, room_id, new_version, additional_creators)
        return 200, {"replacement_room": replacement}


def endpoints(upgrades: RoomUpgradeHandler) -> list[Endpoint]:
    return [UpgradeRoom(upgrades)]

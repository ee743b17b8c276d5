"""GET and PUT /presence/{userId}/status."""

from homeserver.core.errors import MatrixError
from homeserver.core.ids import parse_user_id
from homeserver.handlers.presence import STATES, PresenceHandler
from homeserver.http.request import ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint

PATH = "/_matrix/client/v3/presence/{user_id}/status"


class SetPresence(Endpoint):
    method, path = "PUT", PATH

    def __init__(self, presence: PresenceHandler) -> None:
        self._presence = presence

    async def handle(self, request: ApiRequest, user_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        state = require_field(body, "presence", str)
        if state not in STATES:
            raise MatrixError(400, "M_INVALID_PARAM", "presence must be online, unavailable or offline")
        status_msg = optional_field(body, "status_msg", str)
        await self._presence.set_status(requester, user_id, state, status_msg)
        return 200, {}


class GetPresence(Endpoint):
    method, path = "GET", PATH

    def __init__(self, presence: PresenceHandler) -> None:
        self._presence = presence

    async def handle(self, request: ApiRequest, user_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        try:
            parse_user_id(user_id)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user id {user_id!r}") from None
        return 200, await self._presence.get_status(requester, user_id)


def endpoints(presence: PresenceHandler) -> list[Endpoint]:
    return [SetPresence(presence), GetPresence(presence)]

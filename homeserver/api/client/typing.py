"""PUT /rooms/{roomId}/typing/{userId}."""

from homeserver.handlers.typing import TypingHandler
from homeserver.http.request import ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint


class SetTyping(Endpoint):
    method, path = "PUT", "/_matrix/client/v3/rooms/{room_id}/typing/{user_id}"

    def __init__(self, typing: TypingHandler) -> None:
        self._typing = typing

    async def handle(self, request: ApiRequest, room_id: str, user_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        typing = require_field(body, "typing", bool)
        timeout = optional_field(body, "timeout", int)
        await self._typing.set_typing(requester, room_id, user_id, typing, timeout)
        return 200, {}


def endpoints(typing: TypingHandler) -> list[Endpoint]:
    return [SetTyping(typing)]

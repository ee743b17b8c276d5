"""Creating rooms and sending into them: createRoom, send, state (PUT), redact."""

from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.handlers.messages import MessageHandler
from homeserver.handlers.room_creation import CreateRoomRequest, RoomCreationHandler
from homeserver.http.request import ApiRequest, optional_field
from homeserver.http.routing import Endpoint


def _string_list(body: dict[str, Any], name: str) -> list[str]:
    value = optional_field(body, name, list, [])
    if not all(isinstance(v, str) for v in value):
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be a list of strings")
    return value


class CreateRoom(Endpoint):
    method, path = "POST", "/_matrix/client/v3/createRoom"

    def __init__(self, creation: RoomCreationHandler) -> None:
        self._creation = creation

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        initial_state = optional_field(body, "initial_state", list, [])
        for state in initial_state:
            if not isinstance(state, dict) or not isinstance(state.get("type"), str):
                raise MatrixError(400, "M_INVALID_PARAM", "initial_state entries need a type")
            if not isinstance(state.get("state_key", ""), str) or not isinstance(state.get("content", {}), dict):
                raise MatrixError(400, "M_INVALID_PARAM", "initial_state entries need a string state_key and content")
        room_id, alias = await self._creation.create_room(
            requester,
            CreateRoomRequest(
                preset=optional_field(body, "preset"),
                visibility=optional_field(body, "visibility", str, "private"),
                name=optional_field(body, "name"),
                topic=optional_field(body, "topic"),
                room_alias_name=optional_field(body, "room_alias_name"),
                invite=_string_list(body, "invite"),
                initial_state=initial_state,
                power_level_content_override=optional_field(body, "power_level_content_override", dict),
                creation_content=optional_field(body, "creation_content", dict),
                room_version=optional_field(body, "room_version"),
                is_direct=optional_field(body, "is_direct", bool, False),
            ),
        )
        answer = {"room_id": room_id}
        if alias:
            answer["room_alias"] = alias
        return 200, answer


class _MessageEndpoint(Endpoint):
    def __init__(self, messages: MessageHandler) -> None:
        self._messages = messages


class SendEvent(_MessageEndpoint):
    method, path = "PUT", "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}"

    async def handle(self, request: ApiRequest, room_id: str, event_type: str, txn_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        event_id = await self._messages.send(requester, room_id, event_type, request.json_object(), txn_id)
        return 200, {"event_id": event_id}


class SetState(_MessageEndpoint):
    method = "PUT"
    paths = (
        "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/{state_key}",
        "/_matrix/client/v3/rooms/{room_id}/state/{event_type}",
        # matrix-js-sdk writes an empty state key as a trailing slash.
        "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/",
    )

    async def handle(self, request: ApiRequest, room_id: str, event_type: str, state_key: str = "") -> tuple[int, dict]:
        requester = await request.require_user()
        event_id = await self._messages.set_state(requester, room_id, event_type, state_key, request.json_object())
        return 200, {"event_id": event_id}


class Redact(_MessageEndpoint):
    method, path = "PUT", "/_matrix/client/v3/rooms/{room_id}/redact/{event_id}/{txn_id}"

    async def handle(self, request: ApiRequest, room_id: str, event_id: str, txn_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        reason = optional_field(request.json_object(empty_ok=True), "reason")
        return 200, {"event_id": await self._messages.redact(requester, room_id, event_id, reason, txn_id)}


def endpoints(creation: RoomCreationHandler, messages: MessageHandler) -> list[Endpoint]:
    return [CreateRoom(creation), SendEvent(messages), SetState(messages), Redact(messages)]

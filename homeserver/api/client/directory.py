"""Room aliases (/directory/room), a room's local aliases, and the published room directory
(/directory/list/room, /publicRooms)."""

from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.handlers.directory import DirectoryHandler, PublicRoomsQuery
from homeserver.http.request import ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint


class _DirectoryEndpoint(Endpoint):
    def __init__(self, directory: DirectoryHandler) -> None:
        self._directory = directory


class SetRoomAlias(_DirectoryEndpoint):
    method, path = "PUT", "/_matrix/client/v3/directory/room/{room_alias}"

    async def handle(self, request: ApiRequest, room_alias: str) -> tuple[int, dict]:
        requester = await request.require_user()
        room_id = require_field(request.json_object(), "room_id")
        await self._directory.create_alias(requester, room_alias, room_id)
        return 200, {}


class GetRoomAlias(_DirectoryEndpoint):
    method, path = "GET", "/_matrix/client/v3/directory/room/{room_alias}"

    async def handle(self, request: ApiRequest, room_alias: str) -> tuple[int, dict]:
        return 200, await self._directory.resolve_alias(room_alias)


class DeleteRoomAlias(_DirectoryEndpoint):
    method, path = "DELETE", "/_matrix/client/v3/directory/room/{room_alias}"

    async def handle(self, request: ApiRequest, room_alias: str) -> tuple[int, dict]:
        await self._directory.delete_alias(await request.require_user(), room_alias)
        return 200, {}


class LocalAliases(_DirectoryEndpoint):
    method, path = "GET", "/_matrix/client/v3/rooms/{room_id}/aliases"

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        return 200, {"aliases": await self._directory.local_aliases(requester, room_id)}


class GetRoomVisibility(_DirectoryEndpoint):
    method, path = "GET", "/_matrix/client/v3/directory/list/room/{room_id}"

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        return 200, {"visibility": await self._directory.get_visibility(room_id)}


class SetRoomVisibility(_DirectoryEndpoint):
    method, path = "PUT", "/_matrix/client/v3/directory/list/room/{room_id}"

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        visibility = optional_field(request.json_object(empty_ok=True), "visibility", str, "public")
        await self._directory.set_visibility(requester, room_id, visibility)
        return 200, {}


def _limit(value: Any) -> int | None:
    if value is not None and (value < 0):
        raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
    return value or None


class PublicRooms(_DirectoryEndpoint):
    """The spec lets anyone read the directory with GET; a token that is sent must still be valid."""

    method, path = "GET", "/_matrix/client/v3/publicRooms"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        if request.access_token():
            await request.require_user()
        query = PublicRoomsQuery(
            limit=_limit(request.query_int("limit", 0)), since=request.query_param("since") or None
        )
        return 200, await self._directory.public_rooms(query, request.query_param("server"))


class QueryPublicRooms(_DirectoryEndpoint):
    method, path = "POST", "/_matrix/client/v3/publicRooms"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        await request.require_user()
        body = request.json_object(empty_ok=True)
        search = optional_field(body, "filter", dict, {})
        room_types = optional_field(search, "room_types", list, None)
        if room_types is not None and not all(t is None or isinstance(t, str) for t in room_types):
            raise MatrixError(400, "M_INVALID_PARAM", "filter.room_types must be a list of strings and nulls")
        query = PublicRoomsQuery(
            limit=_limit(optional_field(body, "limit", int)),
            since=optional_field(body, "since") or None,
            search_term=optional_field(search, "generic_search_term"),
            room_types=room_types,
            third_party_instance_id=optional_field(body, "third_party_instance_id"),
        )
        return 200, await self._directory.public_rooms(query, request.query_param("server"))


def endpoints(directory: DirectoryHandler) -> list[Endpoint]:
    return [
        SetRoomAlias(directory),
        GetRoomAlias(directory),
        DeleteRoomAlias(directory),
        LocalAliases(directory),
        GetRoomVisibility(directory),
        SetRoomVisibility(directory),
        PublicRooms(directory),
        QueryPublicRooms(directory),
    ]

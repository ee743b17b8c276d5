"""GET and POST /_matrix/federation/v1/publicRooms: another server listing our published rooms for its
users, with the same paging, search and room type filter as the client API's /publicRooms."""

from homeserver.api.federation.base import FederationEndpoint
from homeserver.core.errors import MatrixError
from homeserver.handlers.directory import DirectoryHandler, PublicRoomsQuery
from homeserver.http.request import ApiRequest, optional_field
from homeserver.http.routing import Endpoint


class _PublicRoomsEndpoint(FederationEndpoint):
    def __init__(self, directory: DirectoryHandler) -> None:
        self._directory = directory


class PublicRooms(_PublicRoomsEndpoint):
    method, path = "GET", "/_matrix/federation/v1/publicRooms"

    async def on_request(self, request: ApiRequest, origin: str) -> tuple[int, dict]:
        query = PublicRoomsQuery(
            limit=request.query_int("limit", 0) or None,
            since=request.query_param("since") or None,
            third_party_instance_id=request.query_param("third_party_instance_id"),
        )
        return 200, await self._directory.public_rooms(query)


class QueryPublicRooms(_PublicRoomsEndpoint):
    method, path = "POST", "/_matrix/federation/v1/publicRooms"

    async def on_request(self, request: ApiRequest, origin: str) -> tuple[int, dict]:
        body = request.json_object(empty_ok=True)
        search = optional_field(body, "filter", dict, {})
        room_types = optional_field(search, "room_types", list, None)
        if room_types is not None and not all(t is None or isinstance(t, str) for t in room_types):
            raise MatrixError(400, "M_INVALID_PARAM", "filter.room_types must be a list of strings and nulls")
        limit = optional_field(body, "limit", int)
        if limit is not None and limit < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
        query = PublicRoomsQuery(
            limit=limit or None,
            since=optional_field(body, "since") or None,
            search_term=optional_field(search, "generic_search_term"),
            room_types=room_types,
            third_party_instance_id=optional_field(body, "third_party_instance_id"),
        )
        return 200, await self._directory.public_rooms(query)


def endpoints(directory: DirectoryHandler) -> list[Endpoint]:
    return [PublicRooms(directory), QueryPublicRooms(directory)]

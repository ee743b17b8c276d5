"""GET /_matrix/federation/v1/query/profile and /query/directory: other servers asking about ours."""

from homeserver.api.federation.base import FederationEndpoint
from homeserver.core.errors import MatrixError
from homeserver.handlers.directory import DirectoryHandler, parse_alias
from homeserver.handlers.profiles import FIELDS, ProfileHandler
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint


def _required(request: ApiRequest, name: str) -> str:
    value = request.query_param(name)
    if not value:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing query parameter: {name}")
    return value


class QueryProfile(FederationEndpoint):
    method, path = "GET", "/_matrix/federation/v1/query/profile"

    def __init__(self, profiles: ProfileHandler) -> None:
        self._profiles = profiles

    async def on_request(self, request: ApiRequest, origin: str) -> tuple[int, dict]:
        user_id = _required(request, "user_id")
        field = request.query_param("field")
        if field is not None and field not in FIELDS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown profile field {field!r}")
        if not self._profiles.is_mine(user_id):
            raise MatrixError(400, "M_INVALID_PARAM", "The user is not on this server")
        profile = await self._profiles.get_profile(user_id)
        if field is None:
            return 200, profile
        return 200, {field: profile[field]} if field in profile else {}  # the spec: an unset field is left out


class QueryDirectory(FederationEndpoint):
    method, path = "GET", "/_matrix/federation/v1/query/directory"

    def __init__(self, directory: DirectoryHandler, server_name: str) -> None:
        self._directory = directory
        self._server_name = server_name

    async def on_request(self, request: ApiRequest, origin: str) -> tuple[int, dict]:
        alias = _required(request, "room_alias")
        if parse_alias(alias)[1] != self._server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "The room alias is not on this server")
        return 200, await self._directory.resolve_alias(alias)


def endpoints(profiles: ProfileHandler, directory: DirectoryHandler, server_name: str) -> list[Endpoint]:
    return [QueryProfile(profiles), QueryDirectory(directory, server_name)]

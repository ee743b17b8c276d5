"""/profile/{userId} and its displayname and avatar_url fields."""

from homeserver.core.errors import MatrixError
from homeserver.handlers.profiles import FIELDS, ProfileHandler
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint


class GetProfile(Endpoint):
    method, path = "GET", "/_matrix/client/v3/profile/{user_id}"

    def __init__(self, profiles: ProfileHandler) -> None:
        self._profiles = profiles

    async def handle(self, request: ApiRequest, user_id: str) -> tuple[int, dict]:
        return 200, await self._profiles.get_profile(user_id)


class GetProfileField(Endpoint):
    method, path = "GET", "/_matrix/client/v3/profile/{user_id}/{field}"

    def __init__(self, profiles: ProfileHandler) -> None:
        self._profiles = profiles

    async def handle(self, request: ApiRequest, user_id: str, field: str) -> tuple[int, dict]:
        if field not in FIELDS:
            raise MatrixError(404, "M_UNRECOGNIZED", f"Unknown profile field {field!r}")
        profile = await self._profiles.get_profile(user_id)
        if field not in profile:
            raise MatrixError(404, "M_NOT_FOUND", f"The user has no {field}")
        return 200, {field: profile[field]}


class SetProfileField(Endpoint):
    method, path = "PUT", "/_matrix/client/v3/profile/{user_id}/{field}"

    def __init__(self, profiles: ProfileHandler) -> None:
        self._profiles = profiles

    async def handle(self, request: ApiRequest, user_id: str, field: str) -> tuple[int, dict]:
        requester = await request.require_user()
        if field not in FIELDS:
            raise MatrixError(404, "M_UNRECOGNIZED", f"Unknown profile field {field!r}")
        body = request.json_object()
        if field not in body:
            raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameter: {field}")
        await self._profiles.set_field(requester, user_id, field, body[field])
        return 200, {}


def endpoints(profiles: ProfileHandler) -> list[Endpoint]:
    return [GetProfile(profiles), GetProfileField(profiles), SetProfileField(profiles)]

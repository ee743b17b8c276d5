"""POST /_matrix/federation/v1/user/keys/query, /user/keys/claim and GET /user/devices/{userId}: other
servers asking for our users' keys and devices. Users of other servers in a request are left out."""

from homeserver.api.client.keys import parse_claim, parse_query, user_id_param
from homeserver.api.federation.base import FederationEndpoint
from homeserver.handlers.e2e_keys import E2eKeysHandler
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint


class UserKeysQuery(FederationEndpoint):
    method, path = "POST", "/_matrix/federation/v1/user/keys/query"

    def __init__(self, keys: E2eKeysHandler) -> None:
        self._keys = keys

    async def on_request(self, request: ApiRequest, origin: str) -> tuple[int, dict]:
        return 200, await self._keys.federation_query_keys(parse_query(request.json_object()))


class UserKeysClaim(FederationEndpoint):
    method, path = "POST", "/_matrix/federation/v1/user/keys/claim"

    def __init__(self, keys: E2eKeysHandler) -> None:
        self._keys = keys

    async def on_request(self, request: ApiRequest, origin: str) -> tuple[int, dict]:
        return 200, await self._keys.federation_claim_keys(parse_claim(request.json_object()))


class UserDevices(FederationEndpoint):
    method, path = "GET", "/_matrix/federation/v1/user/devices/{user_id}"

    def __init__(self, keys: E2eKeysHandler) -> None:
        self._keys = keys

    async def on_request(self, request: ApiRequest, origin: str, user_id: str) -> tuple[int, dict]:
        return 200, await self._keys.user_devices(user_id_param(user_id, "userId"))


def endpoints(keys: E2eKeysHandler) -> list[Endpoint]:
    return [UserKeysQuery(keys), UserKeysClaim(keys), UserDevices(keys)]

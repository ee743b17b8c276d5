"""The kind of endpoint every server-server path is, but /version: signed by its origin server."""

from typing import Any

from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint


class FederationEndpoint(Endpoint):
    """Verifies the request's X-Matrix signature (401 M_UNAUTHORIZED without a valid one) before
    `on_request` runs with the origin server's name: a subclass cannot forget to."""

    async def handle(self, request: ApiRequest, **params: str) -> Any:
        origin = await request.require_origin()
        return await self.on_request(request, origin, **params)

    async def on_request(self, request: ApiRequest, origin: str, **params: str) -> Any:
        raise NotImplementedError

"""GET /health: answers from memory only, so it stays quick when everything else is slow."""

from collections.abc import Callable
from typing import Any

from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint


class Health(Endpoint):
    method, path = "GET", "/health"

    def __init__(self, status: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        self._status = status

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        healthy, components = self._status()
        return (200 if healthy else 503), {"status": "ok" if healthy else "degraded", **components}

"""Discovery: spec versions and the client well-known."""

from typing import Any

from homeserver.http.routing import Endpoint

# Spec versions whose client-server features this server serves (raised as features land).
SUPPORTED_VERSIONS = [
    "r0.0.1",
    "r0.1.0",
    "r0.2.0",
    "r0.3.0",
    "r0.4.0",
    "r0.5.0",
    "r0.6.0",
    "r0.6.1",
    "v1.1",
    "v1.2",
    "v1.3",
    "v1.4",
    "v1.5",
    "v1.6",
]


class Versions(Endpoint):
    method, path = "GET", "/_matrix/client/versions"

    async def handle(self, request: Any) -> tuple[int, dict]:
        # MSC3916 (authenticated media, Matrix 1.11): tells clients below v1.11 to download through
        # /_matrix/client/v1/media, since the legacy endpoints are frozen for new media (docs/media.md).
        return 200, {"versions": SUPPORTED_VERSIONS, "unstable_features": {"org.matrix.msc3916.stable": True}}


class ClientWellKnown(Endpoint):
    method, path = "GET", "/.well-known/matrix/client"

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url

    async def handle(self, request: Any) -> tuple[int, dict]:
        return 200, {"m.homeserver": {"base_url": self._base_url}}

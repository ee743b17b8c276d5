"""What other servers ask before anything else: our implementation, and where our federation API is."""

from typing import Any

from homeserver import __version__
from homeserver.core.federation_auth import split_server_name
from homeserver.http.routing import Endpoint


class Version(Endpoint):
    method, path = "GET", "/_matrix/federation/v1/version"

    async def handle(self, request: Any) -> tuple[int, dict]:
        return 200, {"server": {"name": "homeserver", "version": __version__}}


class ServerWellKnown(Endpoint):
    """/.well-known/matrix/server (serve_server_wellknown): served where https://SERVER_NAME/ reaches us, so
    other servers are sent to port 443 of the same host, as Synapse does, instead of 8448."""

    method, path = "GET", "/.well-known/matrix/server"

    def __init__(self, server_name: str) -> None:
        host, port = split_server_name(server_name)
        host = f"[{host}]" if ":" in host else host
        self._body = {"m.server": f"{host}:{port or 443}"}

    async def handle(self, request: Any) -> tuple[int, dict]:
        return 200, self._body

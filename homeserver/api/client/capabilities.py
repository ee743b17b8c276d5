"""/capabilities: what this server lets clients do, including the room versions it supports."""

from homeserver.core.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint


class Capabilities(Endpoint):
    method, path = "GET", "/_matrix/client/v3/capabilities"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        await request.require_user()
        versions = {v: "stable" if rv.stable else "unstable" for v, rv in KNOWN_ROOM_VERSIONS.items()}
        return 200, {
            "capabilities": {
                "m.change_password": {"enabled": True},
                "m.room_versions": {"default": DEFAULT_ROOM_VERSION, "available": versions},
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.3pid_changes": {"enabled": False},
            }
        }

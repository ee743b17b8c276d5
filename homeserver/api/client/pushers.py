"""GET /pushers and POST /pushers/set."""

from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.handlers.pushers import PusherHandler
from homeserver.http.request import ApiRequest, optional_field
from homeserver.http.routing import Endpoint
from homeserver.storage.pushers import PusherRecord

# Required in every request, and beside them when `kind` is not null (deleting needs only the key).
_KEY_FIELDS = ("kind", "app_id", "pushkey")
_SETTING_FIELDS = ("app_display_name", "device_display_name", "lang", "data")


def _pusher_json(pusher: PusherRecord) -> dict[str, Any]:
    out = {
        "pushkey": pusher.pushkey,
        "kind": pusher.kind,
        "app_id": pusher.app_id,
        "app_display_name": pusher.app_display_name,
        "device_display_name": pusher.device_display_name,
        "lang": pusher.lang,
        "data": pusher.data,
    }
    if pusher.profile_tag is not None:
        out["profile_tag"] = pusher.profile_tag
    return out


def _require(body: dict[str, Any], names: tuple[str, ...]) -> None:
    """400 M_MISSING_PARAM naming every missing field at once, as the spec's example does."""
    missing = [name for name in names if name not in body]
    if missing:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameters: {', '.join(missing)}")


class GetPushers(Endpoint):
    method, path = "GET", "/_matrix/client/v3/pushers"

    def __init__(self, pushers: PusherHandler) -> None:
        self._pushers = pushers

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        pushers = await self._pushers.list(await request.require_user())
        return 200, {"pushers": [_pusher_json(p) for p in pushers]}


class SetPusher(Endpoint):
    method, path = "POST", "/_matrix/client/v3/pushers/set"

    def __init__(self, pushers: PusherHandler) -> None:
        self._pushers = pushers

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        _require(body, _KEY_FIELDS)
        kind = optional_field(body, "kind")
        app_id, pushkey = _string(body, "app_id"), _string(body, "pushkey")
        if kind is None:  # the spec's way to delete a pusher
            await self._pushers.delete(requester, app_id, pushkey)
            return 200, {}
        _require(body, _SETTING_FIELDS)
        await self._pushers.set(
            requester,
            kind=kind,
            app_id=app_id,
            pushkey=pushkey,
            app_display_name=_string(body, "app_display_name"),
            device_display_name=_string(body, "device_display_name"),
            profile_tag=optional_field(body, "profile_tag"),
            lang=_string(body, "lang"),
            data=_object(body, "data"),
            append=optional_field(body, "append", bool, default=False),
        )
        return 200, {}


def _string(body: dict[str, Any], name: str) -> str:
    value = optional_field(body, name)
    if value is None:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be a string")
    return value


def _object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = optional_field(body, name, dict)
    if value is None:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an object")
    return value


def endpoints(pushers: PusherHandler) -> list[Endpoint]:
    return [GetPushers(pushers), SetPusher(pushers)]

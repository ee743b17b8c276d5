"""GET /sync and the filter endpoints."""

import json
from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.core.filters import Filter, load_filter_json
from homeserver.core.sync_token import SyncToken
from homeserver.handlers.sync import SyncHandler, SyncRequest
from homeserver.http.request import ApiRequest
from homeserver.http.responses import Response, accepts_gzip
from homeserver.http.routing import Endpoint
from homeserver.storage.filters import FilterStore

MAX_TIMEOUT_MS = 5 * 60 * 1000
SET_PRESENCE = ("online", "offline", "unavailable")


class Sync(Endpoint):
    method, path = "GET", "/_matrix/client/v3/sync"

    def __init__(self, sync: SyncHandler, filters: FilterStore) -> None:
        self._sync = sync
        self._filters = filters

    def is_long_poll(self, request: ApiRequest) -> bool:
        # Every sync is long-running work: a long-poll waits, an initial sync of big rooms computes. They
        # are counted apart from short requests, so a herd of them cannot starve a whoami.
        return True

    def deadline(self, request: ApiRequest, default: float) -> float:
        try:
            timeout_ms = min(max(int(request.query_param("timeout", "0") or 0), 0), MAX_TIMEOUT_MS)
        except ValueError:
            timeout_ms = 0
        return default + timeout_ms / 1000

    async def handle(self, request: ApiRequest) -> Response:
        requester = await request.require_user()
        timeout_ms = min(request.query_int("timeout", 0), MAX_TIMEOUT_MS)
        since_text = request.query_param("since")
        since = SyncToken.parse(since_text) if since_text else None
        set_presence = request.query_param("set_presence", "online")
        if set_presence not in SET_PRESENCE:
            raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, offline or unavailable")
        full_state = request.query_param("full_state", "false")
        if full_state not in ("true", "false"):
            raise MatrixError(400, "M_INVALID_PARAM", "full_state must be true or false")
        filter_text = request.query_param("filter")
        sync_filter, filter_key = await self._filter(requester.user_id, filter_text)
        return await self._sync.sync(
            SyncRequest(
                user_id=requester.user_id,
                device_id=requester.device_id,
                since=since,
                filter=sync_filter,
                filter_key=filter_key,
                full_state=full_state == "true",
                timeout_ms=timeout_ms,
                gzip=accepts_gzip(request.header("Accept-Encoding")),
                set_presence=set_presence,
            )
        )

    async def _filter(self, user_id: str, text: str | None) -> tuple[Filter, str]:
        """An inline JSON filter (starts with `{`) or the id of an uploaded one."""
        if not text:
            return Filter(), ""
        if text.lstrip().startswith("{"):
            definition = load_filter_json(text)
            return Filter.from_json(definition), json.dumps(definition, sort_keys=True)
        definition = await self._filters.get(user_id, _filter_id(text))
        if definition is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown filter {text!r}")
        return Filter.from_json(definition), "id:" + text


def _filter_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise MatrixError(404, "M_NOT_FOUND", "No such filter")
    return int(text)


class _FilterEndpoint(Endpoint):
    def __init__(self, filters: FilterStore) -> None:
        self._filters = filters

    async def _own(self, request: ApiRequest, user_id: str) -> Any:
        requester = await request.require_user()
        if requester.user_id != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "You can only use your own filters")
        return requester


class CreateFilter(_FilterEndpoint):
    method, path = "POST", "/_matrix/client/v3/user/{user_id}/filter"

    async def handle(self, request: ApiRequest, user_id: str) -> tuple[int, dict]:
        await self._own(request, user_id)
        definition = request.json_object()
        Filter.from_json(definition)  # 400 M_BAD_JSON for a malformed filter, before it is stored
        return 200, {"filter_id": str(await self._filters.add(user_id, definition))}


class GetFilter(_FilterEndpoint):
    method, path = "GET", "/_matrix/client/v3/user/{user_id}/filter/{filter_id}"

    async def handle(self, request: ApiRequest, user_id: str, filter_id: str) -> tuple[int, Any]:
        await self._own(request, user_id)
        definition = await self._filters.get(user_id, _filter_id(filter_id))
        if definition is None:
            raise MatrixError(404, "M_NOT_FOUND", "No such filter")
        return 200, definition


def endpoints(sync: SyncHandler, filters: FilterStore) -> list[Endpoint]:
    return [Sync(sync, filters), CreateFilter(filters), GetFilter(filters)]

"""POST /user_directory/search."""

from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.handlers.user_directory import UserDirectoryHandler
from homeserver.http.request import ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint


class SearchUserDirectory(Endpoint):
    method, path = "POST", "/_matrix/client/v3/user_directory/search"

    def __init__(self, directory: UserDirectoryHandler) -> None:
        self._directory = directory

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        term = require_field(body, "search_term")
        limit = optional_field(body, "limit", int, default=10)
        if limit < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
        found = await self._directory.search(requester, term, limit)
        results: list[dict[str, Any]] = []
        for entry in found.entries:
            result: dict[str, Any] = {"user_id": entry.user_id}
            if entry.display_name is not None:
                result["display_name"] = entry.display_name
            if entry.avatar_url is not None:
                result["avatar_url"] = entry.avatar_url
            results.append(result)
        return 200, {"limited": found.limited, "results": results}


def endpoints(directory: UserDirectoryHandler) -> list[Endpoint]:
    return [SearchUserDirectory(directory)]

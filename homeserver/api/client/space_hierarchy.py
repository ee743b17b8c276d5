"""GET /rooms/{roomId}/hierarchy."""

from homeserver.core.errors import MatrixError
from homeserver.handlers.space_hierarchy import DEFAULT_LIMIT, MAX_DEPTH, HierarchyQuery, SpaceHierarchyHandler
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint


class SpaceHierarchy(Endpoint):
    method, path = "GET", "/_matrix/client/v1/rooms/{room_id}/hierarchy"

    def __init__(self, hierarchy: SpaceHierarchyHandler) -> None:
        self._hierarchy = hierarchy

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        suggested_only = request.query_param("suggested_only", "false")
        if suggested_only not in ("true", "false"):
            raise MatrixError(400, "M_INVALID_PARAM", "suggested_only must be true or false")
        query = HierarchyQuery(
            max_depth=request.query_int("max_depth", MAX_DEPTH),
            suggested_only=suggested_only == "true",
            limit=request.query_int("limit", DEFAULT_LIMIT, minimum=1),
            from_token=request.query_param("from"),
        )
        return 200, await self._hierarchy.hierarchy(requester, room_id, query)


def endpoints(hierarchy: SpaceHierarchyHandler) -> list[Endpoint]:
    return [SpaceHierarchy(hierarchy)]

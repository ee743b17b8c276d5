"""GET statistics (tables, biggest rooms) and GET rooms/{roomId} (one room's size and rows)."""

from homeserver.api.admin.auth import PREFIX, require_admin
from homeserver.core.errors import MatrixError
from homeserver.handlers.admin.statistics import AdminStatistics
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint

MAX_ROOMS = 1000


class Statistics(Endpoint):
    method, path = "GET", PREFIX + "/statistics"

    def __init__(self, statistics: AdminStatistics) -> None:
        self._statistics = statistics

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        await require_admin(request)
        exact = request.query_param("exact", "false")
        if exact not in ("true", "false"):
            raise MatrixError(400, "M_INVALID_PARAM", "exact must be true or false")
        rooms = min(request.query_int("rooms", 10), MAX_ROOMS)
        return 200, await self._statistics.overview(exact == "true", rooms)


class RoomStatistics(Endpoint):
    method, path = "GET", PREFIX + "/rooms/{room_id}"

    def __init__(self, statistics: AdminStatistics) -> None:
        self._statistics = statistics

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        await require_admin(request)
        return 200, await self._statistics.room(room_id)


def endpoints(statistics: AdminStatistics) -> list[Endpoint]:
    return [Statistics(statistics), RoomStatistics(statistics)]

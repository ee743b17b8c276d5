"""Reading rooms: state (GET), event, messages, context, members, joined_members."""

from homeserver.core.errors import MatrixError
from homeserver.core.filters import parse_room_event_filter
from homeserver.handlers.room_reads import MAX_LIMIT, MEMBERSHIPS, RoomReadHandler
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint

DEFAULT_LIMIT = 10


class _ReadEndpoint(Endpoint):
    method = "GET"

    def __init__(self, reads: RoomReadHandler) -> None:
        self._reads = reads


def _limit(request: ApiRequest, filter_limit: int | None) -> int:
    """`limit` from the query (at most MAX_LIMIT), else the filter's, else DEFAULT_LIMIT."""
    default = filter_limit if filter_limit is not None else DEFAULT_LIMIT
    return min(request.query_int("limit", default), MAX_LIMIT)


def _choice(request: ApiRequest, name: str, allowed: frozenset[str] | tuple[str, ...]) -> str | None:
    value = request.query_param(name)
    if value is not None and value not in allowed:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be one of {', '.join(sorted(allowed))}")
    return value


class GetRoomState(_ReadEndpoint):
    path = "/_matrix/client/v3/rooms/{room_id}/state"

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, list]:
        requester = await request.require_user()
        return 200, await self._reads.state(requester, room_id)


class GetStateEvent(_ReadEndpoint):
    paths = (
        "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/{state_key}",
        "/_matrix/client/v3/rooms/{room_id}/state/{event_type}",
        "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/",
    )

    async def handle(self, request: ApiRequest, room_id: str, event_type: str, state_key: str = "") -> tuple[int, dict]:
        requester = await request.require_user()
        form = _choice(request, "format", ("content", "event")) or "content"
        event = await self._reads.state_event(requester, room_id, event_type, state_key)
        return 200, event if form == "event" else event["content"]


class GetEvent(_ReadEndpoint):
    path = "/_matrix/client/v3/rooms/{room_id}/event/{event_id}"

    async def handle(self, request: ApiRequest, room_id: str, event_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        return 200, await self._reads.event(requester, room_id, event_id)


class Messages(_ReadEndpoint):
    path = "/_matrix/client/v3/rooms/{room_id}/messages"

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        direction = request.query_param("dir")
        if direction not in ("b", "f"):
            raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
        event_filter = parse_room_event_filter(request.query_param("filter"))
        answer = await self._reads.messages(
            requester,
            room_id,
            from_token=request.query_param("from") or None,
            to_token=request.query_param("to") or None,
            backwards=direction == "b",
            limit=_limit(request, event_filter.limit if event_filter else None),
            event_filter=event_filter,
        )
        return 200, answer


class Context(_ReadEndpoint):
    path = "/_matrix/client/v3/rooms/{room_id}/context/{event_id}"

    async def handle(self, request: ApiRequest, room_id: str, event_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        event_filter = parse_room_event_filter(request.query_param("filter"))
        limit = _limit(request, event_filter.limit if event_filter else None)
        return 200, await self._reads.context(requester, room_id, event_id, limit, event_filter)


class Members(_ReadEndpoint):
    path = "/_matrix/client/v3/rooms/{room_id}/members"

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        chunk = await self._reads.members(
            requester,
            room_id,
            at_token=request.query_param("at") or None,
            membership=_choice(request, "membership", MEMBERSHIPS),
            not_membership=_choice(request, "not_membership", MEMBERSHIPS),
        )
        return 200, {"chunk": chunk}


class JoinedMembers(_ReadEndpoint):
    path = "/_matrix/client/v3/rooms/{room_id}/joined_members"

    async def handle(self, request: ApiRequest, room_id: str) -> tuple[int, dict]:
        requester = await request.require_user()
        return 200, {"joined": await self._reads.joined_members(requester, room_id)}


def endpoints(reads: RoomReadHandler) -> list[Endpoint]:
    return [
        GetRoomState(reads),
        GetStateEvent(reads),
        GetEvent(reads),
        Messages(reads),
        Context(reads),
        Members(reads),
        JoinedMembers(reads),
    ]

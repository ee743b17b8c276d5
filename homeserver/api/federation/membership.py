"""make_join / send_join, make_leave / send_leave, make_knock / send_knock and invite: other servers' users
joining, leaving and knocking on our rooms, and our users being invited to theirs."""

from homeserver.api.federation.base import FederationEndpoint
from homeserver.handlers.federation.membership import RemoteMembership
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint


class _MembershipEndpoint(FederationEndpoint):
    def __init__(self, remote: RemoteMembership) -> None:
        self._remote = remote


class MakeJoin(_MembershipEndpoint):
    method, path = "GET", "/_matrix/federation/v1/make_join/{room_id}/{user_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str, user_id: str) -> tuple[int, dict]:
        # The spec: a server that names no version supports only version 1.
        versions = request.query.get("ver") or ["1"]
        return 200, await self._remote.make_membership(origin, room_id, user_id, "join", versions)


class SendJoin(_MembershipEndpoint):
    method, path = "PUT", "/_matrix/federation/v2/send_join/{room_id}/{event_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str, event_id: str) -> tuple[int, dict]:
        pdu = request.json_object()
        omit_members = request.query_param("omit_members", "false") == "true"
        join, state_before = await self._remote.receive_membership(origin, room_id, event_id, pdu, "join")
        return 200, await self._remote.join_response(join, state_before, omit_members)


class MakeLeave(_MembershipEndpoint):
    method, path = "GET", "/_matrix/federation/v1/make_leave/{room_id}/{user_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str, user_id: str) -> tuple[int, dict]:
        return 200, await self._remote.make_membership(origin, room_id, user_id, "leave", None)


class SendLeave(_MembershipEndpoint):
    method, path = "PUT", "/_matrix/federation/v2/send_leave/{room_id}/{event_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str, event_id: str) -> tuple[int, dict]:
        await self._remote.receive_membership(origin, room_id, event_id, request.json_object(), "leave")
        return 200, {}


class MakeKnock(_MembershipEndpoint):
    method, path = "GET", "/_matrix/federation/v1/make_knock/{room_id}/{user_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str, user_id: str) -> tuple[int, dict]:
        versions = request.query.get("ver") or ["1"]
        return 200, await self._remote.make_membership(origin, room_id, user_id, "knock", versions)


class SendKnock(_MembershipEndpoint):
    method, path = "PUT", "/_matrix/federation/v1/send_knock/{room_id}/{event_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str, event_id: str) -> tuple[int, dict]:
        await self._remote.receive_membership(origin, room_id, event_id, request.json_object(), "knock")
        return 200, {"knock_room_state": await self._remote.stripped_state(room_id)}


class Invite(_MembershipEndpoint):
    method, path = "PUT", "/_matrix/federation/v2/invite/{room_id}/{event_id}"

    async def on_request(self, request: ApiRequest, origin: str, room_id: str, event_id: str) -> tuple[int, dict]:
        return 200, await self._remote.receive_invite(origin, room_id, event_id, request.json_object())


def endpoints(remote: RemoteMembership) -> list[Endpoint]:
    return [
        MakeJoin(remote),
        SendJoin(remote),
        MakeLeave(remote),
        SendLeave(remote),
        MakeKnock(remote),
        SendKnock(remote),
        Invite(remote),
    ]

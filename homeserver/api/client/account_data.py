"""GET/PUT /user/{userId}/account_data/{type} and /user/{userId}/rooms/{roomId}/account_data/{type}."""

from homeserver.handlers.account_data import AccountDataHandler
from homeserver.http.request import ApiRequest
from homeserver.http.routing import Endpoint

_GLOBAL = "/_matrix/client/v3/user/{user_id}/account_data/{data_type}"
_ROOM = "/_matrix/client/v3/user/{user_id}/rooms/{room_id}/account_data/{data_type}"


class _AccountDataEndpoint(Endpoint):
    def __init__(self, account_data: AccountDataHandler) -> None:
        self._account_data = account_data


class GetAccountData(_AccountDataEndpoint):
    method, path = "GET", _GLOBAL

    async def handle(self, request: ApiRequest, user_id: str, data_type: str) -> tuple[int, dict]:
        requester = await request.require_user()
        return 200, await self._account_data.get_global(requester, user_id, data_type)


class SetAccountData(_AccountDataEndpoint):
    method, path = "PUT", _GLOBAL

    async def handle(self, request: ApiRequest, user_id: str, data_type: str) -> tuple[int, dict]:
        requester = await request.require_user()
        await self._account_data.set_global(requester, user_id, data_type, request.json_object())
        return 200, {}


class GetRoomAccountData(_AccountDataEndpoint):
    method, path = "GET", _ROOM

    async def handle(self, request: ApiRequest, user_id: str, room_id: str, data_type: str) -> tuple[int, dict]:
        requester = await request.require_user()
        return 200, await self._account_data.get_room(requester, user_id, room_id, data_type)


class SetRoomAccountData(_AccountDataEndpoint):
    method, path = "PUT", _ROOM

    async def handle(self, request: ApiRequest, user_id: str, room_id: str, data_type: str) -> tuple[int, dict]:
        requester = await request.require_user()
        await self._account_data.set_room(requester, user_id, room_id, data_type, request.json_object())
        return 200, {}


def endpoints(account_data: AccountDataHandler) -> list[Endpoint]:
    return [
        GetAccountData(account_data),
        SetAccountData(account_data),
        GetRoomAccountData(account_data),
        SetRoomAccountData(account_data),
    ]

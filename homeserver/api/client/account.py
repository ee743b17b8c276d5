"""/account/whoami, /account/password, /account/deactivate."""

from homeserver.core.errors import MatrixError
from homeserver.handlers.account import AccountHandler
from homeserver.http.request import ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint


class WhoAmI(Endpoint):
    method, path = "GET", "/_matrix/client/v3/account/whoami"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        return 200, {"user_id": requester.user_id, "device_id": requester.device_id, "is_guest": False}


class ChangePassword(Endpoint):
    method, path = "POST", "/_matrix/client/v3/account/password"

    def __init__(self, account: AccountHandler) -> None:
        self._account = account

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object()
        new_password = require_field(body, "new_password")
        if not new_password:
            raise MatrixError(400, "M_INVALID_PARAM", "new_password must not be empty")
        logout_devices = optional_field(body, "logout_devices", bool, True)
        await self._account.change_password(requester, new_password, logout_devices, body.get("auth"))
        return 200, {}


class Deactivate(Endpoint):
    method, path = "POST", "/_matrix/client/v3/account/deactivate"

    def __init__(self, account: AccountHandler) -> None:
        self._account = account

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        requester = await request.require_user()
        body = request.json_object(empty_ok=True)
        await self._account.deactivate(requester, body.get("auth"))
        # No identity server is ever bound by this server, so there is nothing to unbind.
        return 200, {"id_server_unbind_result": "no-support"}


def endpoints(account: AccountHandler) -> list[Endpoint]:
    return [WhoAmI(), ChangePassword(account), Deactivate(account)]

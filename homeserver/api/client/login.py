"""/login and /logout."""

from homeserver.core.errors import MatrixError
from homeserver.handlers.login import LoginHandler
from homeserver.handlers.ui_auth import identified_user
from homeserver.http.request import ApiRequest, device_id_field, optional_field, require_field
from homeserver.http.routing import Endpoint


class LoginFlows(Endpoint):
    method, path = "GET", "/_matrix/client/v3/login"

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        return 200, {"flows": [{"type": "m.login.password"}]}


class Login(Endpoint):
    method, path = "POST", "/_matrix/client/v3/login"

    def __init__(self, login: LoginHandler, server_name: str, base_url: str) -> None:
        self._login = login
        self._server_name = server_name
        self._base_url = base_url

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        body = request.json_object()
        if require_field(body, "type") != "m.login.password":
            raise MatrixError(400, "M_UNKNOWN", "Unknown login type; this server supports m.login.password")
        user_id = identified_user(body, self._server_name)
        password = optional_field(body, "password")
        if not password:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: password")
        result = await self._login.password_login(
            user_id,
            password,
            device_id_field(body),
            optional_field(body, "initial_device_display_name"),
            request.client_ip,
        )
        return 200, {
            "user_id": result.user_id,
            "access_token": result.access_token,
            "device_id": result.device_id,
            "home_server": self._server_name,
            "well_known": {"m.homeserver": {"base_url": self._base_url}},
        }


class Logout(Endpoint):
    method, path = "POST", "/_matrix/client/v3/logout"

    def __init__(self, login: LoginHandler) -> None:
        self._login = login

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        await self._login.logout(await request.require_user())
        return 200, {}


class LogoutAll(Endpoint):
    method, path = "POST", "/_matrix/client/v3/logout/all"

    def __init__(self, login: LoginHandler) -> None:
        self._login = login

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        await self._login.logout_all(await request.require_user())
        return 200, {}


def endpoints(login: LoginHandler, server_name: str, base_url: str) -> list[Endpoint]:
    return [LoginFlows(), Login(login, server_name, base_url), Logout(login), LogoutAll(login)]

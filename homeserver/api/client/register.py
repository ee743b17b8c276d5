"""/register and /register/available."""

from typing import Any

from homeserver.core.errors import MatrixError
from homeserver.handlers.registration import RegistrationHandler, RegistrationRequest
from homeserver.http.request import ApiRequest, device_id_field, optional_field
from homeserver.http.routing import Endpoint


class Register(Endpoint):
    method, path = "POST", "/_matrix/client/v3/register"

    def __init__(self, registration: RegistrationHandler, server_name: str) -> None:
        self._registration = registration
        self._server_name = server_name

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        kind = request.query_param("kind", "user")
        if kind == "guest":
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
        if kind != "user":
            raise MatrixError(400, "M_INVALID_PARAM", "kind must be user or guest")
        body = request.json_object()
        user_id, login = await self._registration.register(
            RegistrationRequest(
                username=optional_field(body, "username"),
                password=optional_field(body, "password"),
                device_id=device_id_field(body),
                device_display_name=optional_field(body, "initial_device_display_name"),
                inhibit_login=optional_field(body, "inhibit_login", bool, False),
                auth=body.get("auth"),
            ),
            request.client_ip,
        )
        answer: dict[str, Any] = {"user_id": user_id, "home_server": self._server_name}
        if login is not None:
            answer.update(access_token=login.access_token, device_id=login.device_id)
        return 200, answer


class RegisterAvailable(Endpoint):
    method, path = "GET", "/_matrix/client/v3/register/available"

    def __init__(self, registration: RegistrationHandler) -> None:
        self._registration = registration

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        username = request.query_param("username")
        if not username:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: username")
        # Registration maps a username to lower case, so the answer here is for that localpart too.
        await self._registration.check_available(username.lower())
        return 200, {"available": True}


def endpoints(registration: RegistrationHandler, server_name: str) -> list[Endpoint]:
    return [Register(registration, server_name), RegisterAvailable(registration)]

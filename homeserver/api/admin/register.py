"""Shared-secret registration: /_homeserver/admin/v1/register (and Synapse's path, for its tools)."""

from homeserver.handlers.login import LoginHandler
from homeserver.handlers.shared_secret_registration import SharedSecretRegistration
from homeserver.http.request import ApiRequest, optional_field, require_field
from homeserver.http.routing import Endpoint

PATHS = ("/_homeserver/admin/v1/register", "/_synapse/admin/v1/register")


class RegisterNonce(Endpoint):
    method, paths = "GET", PATHS

    def __init__(self, shared: SharedSecretRegistration) -> None:
        self._shared = shared

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        return 200, {"nonce": self._shared.new_nonce()}


class RegisterWithSharedSecret(Endpoint):
    method, paths = "POST", PATHS

    def __init__(self, shared: SharedSecretRegistration, login: LoginHandler) -> None:
        self._shared = shared
        self._login = login

    async def handle(self, request: ApiRequest) -> tuple[int, dict]:
        body = request.json_object()
        user_id = await self._shared.register(
            require_field(body, "nonce"),
            require_field(body, "username"),
            require_field(body, "password"),
            optional_field(body, "admin", bool, False),
            require_field(body, "mac"),
        )
        login = await self._login.create_login(user_id, None, "shared secret registration", request.client_ip)
        return 200, {"user_id": user_id, "access_token": login.access_token, "device_id": login.device_id}


def endpoints(shared: SharedSecretRegistration, login: LoginHandler) -> list[Endpoint]:
    return [RegisterNonce(shared), RegisterWithSharedSecret(shared, login)]

"""matrix-nio, a popular client library, against the real server: what its users would do first."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from nio import (
    AsyncClient,
    DeleteDevicesAuthResponse,
    DeleteDevicesResponse,
    DevicesResponse,
    LoginError,
    LoginResponse,
    LogoutResponse,
    RegisterResponse,
    WhoamiError,
    WhoamiResponse,
)

from tests.server import ServerProcess

PASSWORD = "nio's own password"


def run(server: ServerProcess, scenario: Callable[[AsyncClient], Awaitable[Any]], user: str = "") -> Any:
    async def main() -> Any:
        client = AsyncClient(server.url, user)
        try:
            return await scenario(client)
        finally:
            await client.close()

    return asyncio.run(main())


def register(server: ServerProcess) -> RegisterResponse:
    username = "nio_" + uuid.uuid4().hex[:10]

    async def scenario(client: AsyncClient) -> RegisterResponse:
        return await client.register(username, PASSWORD, device_name="nio test")

    response = run(server, scenario)
    assert isinstance(response, RegisterResponse), response
    return response


def test_nio_registers_logs_in_and_calls_whoami(server: ServerProcess) -> None:
    registered = register(server)
    assert registered.user_id.endswith(":localhost")

    async def scenario(client: AsyncClient) -> tuple[LoginResponse, WhoamiResponse]:
        login = await client.login(PASSWORD, device_name="nio laptop")
        assert isinstance(login, LoginResponse), login
        whoami = await client.whoami()
        assert isinstance(whoami, WhoamiResponse), whoami
        return login, whoami

    login, whoami = run(server, scenario, user=registered.user_id)
    assert login.user_id == registered.user_id
    assert login.device_id != registered.device_id
    assert (whoami.user_id, whoami.device_id) == (registered.user_id, login.device_id)


def test_nio_login_with_wrong_password_reports_forbidden(server: ServerProcess) -> None:
    registered = register(server)

    async def scenario(client: AsyncClient) -> LoginError:
        return await client.login("not the password")

    error = run(server, scenario, user=registered.user_id)
    assert isinstance(error, LoginError)
    assert error.status_code == "M_FORBIDDEN"


def test_nio_lists_devices_and_deletes_one_with_the_password(server: ServerProcess) -> None:
    registered = register(server)

    async def scenario(client: AsyncClient) -> None:
        assert isinstance(await client.login(PASSWORD), LoginResponse)
        listed = await client.devices()
        assert isinstance(listed, DevicesResponse), listed
        assert {d.id for d in listed.devices} == {registered.device_id, client.device_id}
        assert {d.display_name for d in listed.devices if d.id == registered.device_id} == {"nio test"}

        challenge = await client.delete_devices([registered.device_id])
        assert isinstance(challenge, DeleteDevicesAuthResponse), challenge
        assert ["m.login.password"] in [flow["stages"] for flow in challenge.flows]
        auth = {
            "type": "m.login.password",
            "user": registered.user_id,
            "password": PASSWORD,
            "session": challenge.session,
        }
        deleted = await client.delete_devices([registered.device_id], auth)
        assert isinstance(deleted, DeleteDevicesResponse), deleted

        remaining = await client.devices()
        assert [d.id for d in remaining.devices] == [client.device_id]

    run(server, scenario, user=registered.user_id)


def test_nio_logout_ends_the_session(server: ServerProcess) -> None:
    registered = register(server)

    async def scenario(client: AsyncClient) -> WhoamiError:
        assert isinstance(await client.login(PASSWORD), LoginResponse)
        token = client.access_token
        assert isinstance(await client.logout(), LogoutResponse)
        client.access_token = token  # nio forgets it; ask with the old one to see that the server did too
        return await client.whoami()

    error = run(server, scenario, user=registered.user_id)
    assert isinstance(error, WhoamiError)
    assert error.status_code == "M_UNKNOWN_TOKEN"

"""Access tokens are cached once looked up; every way of revoking one still takes effect on the next request."""

import requests

from tests.client import Client
from tests.integration.test_account import change_password, deactivate, second_login
from tests.integration.test_devices import DEVICES
from tests.server import ServerProcess

WHOAMI = "/_matrix/client/v3/account/whoami"


def cached(*clients: Client) -> None:
    """Use each token, so that the server has it in its cache."""
    for client in clients:
        assert client.get(WHOAMI).status_code == 200


def refused(client: Client) -> bool:
    response = client.get(WHOAMI)
    return response.status_code == 401 and response.json()["errcode"] == "M_UNKNOWN_TOKEN"


def test_a_token_in_use_is_read_once(server: ServerProcess, alice: Client) -> None:
    cached(alice)
    before = requests.get(server.url + "/health", timeout=10).json()["access_tokens"]["reads"]
    cached(alice, alice, alice)
    assert requests.get(server.url + "/health", timeout=10).json()["access_tokens"]["reads"] == before


def test_logout_refuses_the_cached_token_at_once(server: ServerProcess, alice: Client) -> None:
    other = second_login(server, alice)
    cached(alice, other)
    assert other.post("/_matrix/client/v3/logout", {}).status_code == 200
    assert refused(other) and not refused(alice)


def test_logout_all_refuses_every_cached_token(server: ServerProcess, alice: Client) -> None:
    other = second_login(server, alice)
    cached(alice, other)
    assert alice.post("/_matrix/client/v3/logout/all", {}).status_code == 200
    assert refused(alice) and refused(other)


def test_deleting_a_device_refuses_its_cached_token(server: ServerProcess, alice: Client) -> None:
    phone = second_login(server, alice)
    cached(alice, phone)
    path = f"{DEVICES}/{phone.device_id}"
    session = alice.delete(path).json()["session"]
    assert alice.delete(path, {"auth": alice.password_auth(session=session)}).status_code == 200
    assert refused(phone) and not refused(alice)


def test_password_change_refuses_the_other_devices_cached_tokens(server: ServerProcess, alice: Client) -> None:
    other = second_login(server, alice)
    cached(alice, other)
    assert change_password(alice, logout_devices=True).status_code == 200
    assert refused(other) and not refused(alice)


def test_deactivation_refuses_every_cached_token(server: ServerProcess, alice: Client) -> None:
    other = second_login(server, alice)
    cached(alice, other)
    assert deactivate(alice).status_code == 200
    assert refused(alice) and refused(other)


def test_logging_in_again_on_a_device_refuses_its_old_cached_token(server: ServerProcess, alice: Client) -> None:
    old = second_login(server, alice)
    cached(old)
    again = Client(server.url)
    assert again.login(alice.user_id, device_id=old.device_id).status_code == 200
    assert refused(old) and not refused(again)

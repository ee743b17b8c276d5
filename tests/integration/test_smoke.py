"""The basics a client checks first: discovery, registration, login, whoami."""

from tests.client import Client


def test_versions_lists_spec_versions(anon: Client) -> None:
    response = anon.get("/_matrix/client/versions")
    assert response.status_code == 200
    assert "v1.1" in response.json()["versions"]


def test_register_then_whoami(alice: Client) -> None:
    response = alice.get("/_matrix/client/v3/account/whoami")
    assert response.status_code == 200
    assert response.json() == {"user_id": alice.user_id, "device_id": alice.device_id, "is_guest": False}

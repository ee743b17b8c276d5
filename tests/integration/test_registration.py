"""Registration: the m.login.dummy dance, username checks, closed registration and its rate limit."""

import uuid
from collections.abc import Iterator

import pytest

from tests.client import PASSWORD, Client
from tests.integration.servers import at_once, extra_server
from tests.server import ServerProcess

REGISTER = "/_matrix/client/v3/register"
AVAILABLE = "/_matrix/client/v3/register/available"
WHOAMI = "/_matrix/client/v3/account/whoami"


def unique(prefix: str = "user") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def dummy_registration(username: str, session: str | None = None, **extra: object) -> dict:
    auth = {"type": "m.login.dummy", **({"session": session} if session else {})}
    return {"username": username, "password": PASSWORD, "auth": auth, **extra}


@pytest.fixture(scope="module")
def closed_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with extra_server(backend, tmp_path_factory.mktemp("closed"), {"enable_registration": False}) as process:
        yield process


@pytest.fixture(scope="module")
def limited_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    overrides = {"rc_registration": {"per_second": 0.001, "burst_count": 2}}
    with extra_server(backend, tmp_path_factory.mktemp("limited"), overrides, x_forwarded=True) as process:
        yield process


# -- the user-interactive auth dance -----------------------------------------------------------------


def test_register_without_auth_answers_401_with_dummy_flow_and_session(anon: Client) -> None:
    response = anon.post(REGISTER, {"username": unique(), "password": PASSWORD})
    assert response.status_code == 401
    body = response.json()
    assert {"stages": ["m.login.dummy"]} in body["flows"]
    assert isinstance(body["session"], str) and body["session"]
    assert body.get("completed", []) == []
    assert "errcode" not in body  # errcode only comes with a failed attempt at a stage


def test_register_with_empty_body_answers_401_with_flows(anon: Client) -> None:
    # Element starts registration with an empty body, to learn the flows.
    response = anon.post(REGISTER, {})
    assert response.status_code == 401
    assert {"stages": ["m.login.dummy"]} in response.json()["flows"]


def test_register_completes_dummy_stage_with_the_session_from_the_401(anon: Client) -> None:
    username = unique()
    first = anon.post(REGISTER, {"username": username, "password": PASSWORD})
    session = first.json()["session"]
    response = anon.post(REGISTER, dummy_registration(username, session))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == f"@{username}:localhost"
    assert body["access_token"] and body["device_id"]
    whoami = anon.get(WHOAMI, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert whoami.json()["user_id"] == body["user_id"]


def test_register_with_unknown_session_is_refused(anon: Client) -> None:
    response = anon.post(REGISTER, dummy_registration(unique(), "no-such-session"))
    assert response.status_code == 400
    assert "access_token" not in response.json()


def test_registered_user_can_log_in_with_the_password(anon: Client) -> None:
    username = unique()
    anon.post(REGISTER, dummy_registration(username))
    assert Client(anon.base_url).login(username).status_code == 200


def test_register_uses_given_device_id_and_display_name(anon: Client) -> None:
    body = dummy_registration(unique(), device_id="MYPHONE", initial_device_display_name="Phone")
    answer = anon.post(REGISTER, body).json()
    assert answer["device_id"] == "MYPHONE"
    user = Client(anon.base_url, answer["access_token"])
    device = user.get("/_matrix/client/v3/devices/MYPHONE").json()
    assert device["display_name"] == "Phone"


def test_register_with_inhibit_login_returns_no_access_token(anon: Client) -> None:
    response = anon.post(REGISTER, dummy_registration(unique(), inhibit_login=True))
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"].startswith("@")
    assert "access_token" not in body and "device_id" not in body


def test_register_without_username_generates_a_user_id(anon: Client) -> None:
    body = {"password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    response = anon.post(REGISTER, body)
    assert response.status_code == 200
    assert response.json()["user_id"].endswith(":localhost")


def test_register_maps_username_to_lower_case(anon: Client) -> None:
    username = unique("Mixed")
    response = anon.post(REGISTER, dummy_registration(username))
    assert response.status_code == 200
    assert response.json()["user_id"] == f"@{username.lower()}:localhost"


def test_register_guest_is_forbidden(anon: Client) -> None:
    response = anon.post(REGISTER + "?kind=guest", {})
    assert response.status_code == 403
    assert response.json()["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


# -- usernames -----------------------------------------------------------------------------------------


def test_register_taken_username_gives_user_in_use(anon: Client, alice: Client) -> None:
    localpart = alice.user_id[1:].split(":")[0]
    response = anon.post(REGISTER, dummy_registration(localpart))
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_USER_IN_USE"


@pytest.mark.parametrize("username", ["has space", "colon:inside", "sm\u00f6rg\u00e5s", "@at", ""])
def test_register_invalid_username_gives_invalid_username(anon: Client, username: str) -> None:
    response = anon.post(REGISTER, dummy_registration(username))
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_INVALID_USERNAME"


def test_concurrent_registrations_of_one_name_create_one_user(anon: Client) -> None:
    for _ in range(6):  # a race: several tries make it near certain to show if it is there
        body = dummy_registration(unique())
        responses = at_once(10, lambda body=body: Client(anon.base_url).post(REGISTER, body))
        assert sorted(r.status_code for r in responses) == [200] + [400] * 9, [r.text for r in responses]
        assert all(r.json()["errcode"] == "M_USER_IN_USE" for r in responses if r.status_code == 400)


def test_available_for_free_username(anon: Client) -> None:
    response = anon.get(AVAILABLE, params={"username": unique()})
    assert response.status_code == 200
    assert response.json() == {"available": True}


def test_available_for_taken_username_gives_user_in_use(anon: Client, alice: Client) -> None:
    localpart = alice.user_id[1:].split(":")[0]
    response = anon.get(AVAILABLE, params={"username": localpart})
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_USER_IN_USE"


def test_available_for_taken_username_in_other_case_gives_user_in_use(anon: Client, alice: Client) -> None:
    localpart = alice.user_id[1:].split(":")[0]
    response = anon.get(AVAILABLE, params={"username": localpart.upper()})
    assert response.json()["errcode"] == "M_USER_IN_USE"


def test_available_for_invalid_username_gives_invalid_username(anon: Client) -> None:
    response = anon.get(AVAILABLE, params={"username": "not valid!"})
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_INVALID_USERNAME"


def test_available_without_username_gives_missing_param(anon: Client) -> None:
    response = anon.get(AVAILABLE)
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_MISSING_PARAM"


# -- closed registration and rate limits ---------------------------------------------------------------


def test_register_when_closed_is_forbidden(closed_server: ServerProcess) -> None:
    client = Client(closed_server.url)
    for body in ({"username": unique(), "password": PASSWORD}, dummy_registration(unique())):
        response = client.post(REGISTER, body)
        assert response.status_code == 403
        assert response.json()["errcode"] == "M_FORBIDDEN"


def test_register_when_closed_creates_no_user(closed_server: ServerProcess) -> None:
    client = Client(closed_server.url)
    username = unique()
    client.post(REGISTER, dummy_registration(username))
    assert client.login(username).json()["errcode"] == "M_FORBIDDEN"


def test_registration_is_rate_limited_per_address(limited_server: ServerProcess) -> None:
    client = Client(limited_server.url)
    address = {"X-Forwarded-For": "198.51.100.1"}
    for _ in range(2):
        assert client.post(REGISTER, dummy_registration(unique()), headers=dict(address)).status_code == 200
    response = client.post(REGISTER, dummy_registration(unique()), headers=dict(address))
    assert response.status_code == 429
    body = response.json()
    assert body["errcode"] == "M_LIMIT_EXCEEDED"
    assert body["retry_after_ms"] > 0
    assert int(response.headers["Retry-After"]) * 1000 >= body["retry_after_ms"]


def test_registration_rate_limit_leaves_other_addresses_alone(limited_server: ServerProcess) -> None:
    client = Client(limited_server.url)
    for _ in range(3):
        client.post(REGISTER, dummy_registration(unique()), headers={"X-Forwarded-For": "198.51.100.2"})
    response = client.post(REGISTER, dummy_registration(unique()), headers={"X-Forwarded-For": "198.51.100.3"})
    assert response.status_code == 200

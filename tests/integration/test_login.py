"""Logging in with a password (both ways of naming the user), logging out, and the login rate limits."""

import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.client import PASSWORD, Client, new_user
from tests.integration.servers import at_once, extra_server
from tests.server import ServerProcess

LOGIN = "/_matrix/client/v3/login"
WHOAMI = "/_matrix/client/v3/account/whoami"


def localpart(client: Client) -> str:
    return client.user_id[1:].split(":")[0]


def whoami_status(base_url: str, token: str) -> int:
    return Client(base_url, token).get(WHOAMI).status_code


@pytest.fixture(scope="module")
def limited_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    low = {"per_second": 0.001, "burst_count": 2}
    overrides = {"rc_login": {"address": low, "account": low, "failed_attempts": low}}
    with extra_server(backend, tmp_path_factory.mktemp("limited"), overrides, x_forwarded=True) as process:
        yield process


def fresh_address() -> dict[str, str]:
    """A client address of its own (the limited server trusts X-Forwarded-For)."""
    n = uuid.uuid4().int
    return {"X-Forwarded-For": f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"}


def password_login(user: str, password: str = PASSWORD, **extra: object) -> dict:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        **extra,
    }


# -- logging in --------------------------------------------------------------------------------------------


def test_login_flows_offer_password(anon: Client) -> None:
    response = anon.get(LOGIN)
    assert response.status_code == 200
    assert {"type": "m.login.password"} in response.json()["flows"]


def test_login_with_identifier_and_localpart(anon: Client, alice: Client) -> None:
    response = anon.post(LOGIN, password_login(localpart(alice)))
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == alice.user_id
    assert whoami_status(anon.base_url, body["access_token"]) == 200


def test_login_with_identifier_and_full_user_id(anon: Client, alice: Client) -> None:
    response = anon.post(LOGIN, password_login(alice.user_id))
    assert response.status_code == 200
    assert response.json()["user_id"] == alice.user_id


def test_login_with_old_user_field(anon: Client, alice: Client) -> None:
    for user in (localpart(alice), alice.user_id):
        response = anon.post(LOGIN, {"type": "m.login.password", "user": user, "password": PASSWORD})
        assert response.status_code == 200, response.text
        assert response.json()["user_id"] == alice.user_id


def test_login_matches_user_id_case_insensitively(anon: Client, alice: Client) -> None:
    response = anon.post(LOGIN, password_login(localpart(alice).upper()))
    assert response.status_code == 200
    assert response.json()["user_id"] == alice.user_id


def test_login_answer_has_token_device_and_well_known(server: ServerProcess, anon: Client, alice: Client) -> None:
    body = anon.post(LOGIN, password_login(alice.user_id)).json()
    assert body["access_token"] and body["device_id"]
    assert body["well_known"]["m.homeserver"]["base_url"] == f"http://localhost:{server.port}/"


def test_login_with_wrong_password_is_forbidden(anon: Client, alice: Client) -> None:
    response = anon.post(LOGIN, password_login(alice.user_id, "wrong password"))
    assert response.status_code == 403
    assert response.json()["errcode"] == "M_FORBIDDEN"
    assert "access_token" not in response.json()


def test_login_as_unknown_user_is_forbidden(anon: Client) -> None:
    response = anon.post(LOGIN, password_login("nobody_" + uuid.uuid4().hex[:8]))
    assert response.status_code == 403
    assert response.json()["errcode"] == "M_FORBIDDEN"


def test_login_as_user_of_another_server_is_forbidden(anon: Client) -> None:
    response = anon.post(LOGIN, password_login("@alice:elsewhere.example"))
    assert response.status_code == 403
    assert response.json()["errcode"] == "M_FORBIDDEN"


def test_login_with_unknown_type_is_refused(anon: Client, alice: Client) -> None:
    response = anon.post(LOGIN, {"type": "m.login.magic", "user": alice.user_id})
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_UNKNOWN"


def test_each_login_is_a_new_device_with_its_own_token(anon: Client, alice: Client) -> None:
    first = anon.post(LOGIN, password_login(alice.user_id)).json()
    second = anon.post(LOGIN, password_login(alice.user_id)).json()
    assert len({first["device_id"], second["device_id"], alice.device_id}) == 3
    assert whoami_status(anon.base_url, first["access_token"]) == 200
    assert whoami_status(anon.base_url, second["access_token"]) == 200


def test_login_with_device_id_uses_it(anon: Client, alice: Client) -> None:
    body = anon.post(LOGIN, password_login(alice.user_id, device_id="LAPTOP")).json()
    assert body["device_id"] == "LAPTOP"
    whoami = Client(anon.base_url, body["access_token"]).get(WHOAMI).json()
    assert whoami["device_id"] == "LAPTOP"


def test_login_with_known_device_id_revokes_its_old_token(anon: Client, alice: Client) -> None:
    old = anon.post(LOGIN, password_login(alice.user_id, device_id="TABLET")).json()["access_token"]
    new = anon.post(LOGIN, password_login(alice.user_id, device_id="TABLET")).json()["access_token"]
    assert whoami_status(anon.base_url, old) == 401
    assert whoami_status(anon.base_url, new) == 200


def test_concurrent_logins_with_one_device_id_all_succeed(anon: Client, alice: Client) -> None:
    for attempt in range(5):  # a race: several tries make it near certain to show if it is there
        body = password_login(alice.user_id, device_id=f"SHARED{attempt}")
        responses = at_once(10, lambda body=body: Client(anon.base_url).post(LOGIN, body))
        assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
    devices = [d["device_id"] for d in alice.get("/_matrix/client/v3/devices").json()["devices"]]
    assert sorted(d for d in devices if d.startswith("SHARED")) == [f"SHARED{i}" for i in range(5)]


# -- logging out -------------------------------------------------------------------------------------------


def test_logout_revokes_the_token(alice: Client) -> None:
    assert alice.post("/_matrix/client/v3/logout", {}).status_code == 200
    response = alice.get(WHOAMI)
    assert response.status_code == 401
    assert response.json()["errcode"] == "M_UNKNOWN_TOKEN"


def test_logout_removes_the_device_but_not_the_others(server: ServerProcess, alice: Client) -> None:
    other = Client(server.url)
    other.login(alice.user_id)
    other.post("/_matrix/client/v3/logout", {})
    devices = [d["device_id"] for d in alice.get("/_matrix/client/v3/devices").json()["devices"]]
    assert devices == [alice.device_id]


def test_logout_all_revokes_every_token(server: ServerProcess, alice: Client) -> None:
    other = Client(server.url)
    other.login(alice.user_id)
    assert alice.post("/_matrix/client/v3/logout/all", {}).status_code == 200
    assert alice.get(WHOAMI).status_code == 401
    assert other.get(WHOAMI).status_code == 401
    fresh = Client(server.url)
    fresh.login(alice.user_id)
    assert [d["device_id"] for d in fresh.get("/_matrix/client/v3/devices").json()["devices"]] == [fresh.device_id]


# -- rate limits -------------------------------------------------------------------------------------------


def assert_limit_exceeded(response: requests.Response) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["errcode"] == "M_LIMIT_EXCEEDED"
    assert body["retry_after_ms"] > 0
    assert int(response.headers["Retry-After"]) * 1000 >= body["retry_after_ms"]


def test_login_is_rate_limited_per_address(limited_server: ServerProcess) -> None:
    users = [new_user(limited_server.url) for _ in range(3)]
    client, address = Client(limited_server.url), fresh_address()
    for user in users[:2]:
        assert client.post(LOGIN, password_login(user.user_id), headers=dict(address)).status_code == 200
    assert_limit_exceeded(client.post(LOGIN, password_login(users[2].user_id), headers=dict(address)))
    # Another address is not held back by this one's limit.
    assert client.post(LOGIN, password_login(users[2].user_id), headers=fresh_address()).status_code == 200


def test_login_is_rate_limited_per_account(limited_server: ServerProcess) -> None:
    user = new_user(limited_server.url)
    client = Client(limited_server.url)
    for _ in range(2):
        assert client.post(LOGIN, password_login(user.user_id), headers=fresh_address()).status_code == 200
    assert_limit_exceeded(client.post(LOGIN, password_login(user.user_id), headers=fresh_address()))


def test_account_rate_limit_ignores_the_case_of_the_user_id(limited_server: ServerProcess) -> None:
    user = new_user(limited_server.url)
    client = Client(limited_server.url)
    for name in (localpart(user), localpart(user).upper()):
        assert client.post(LOGIN, password_login(name), headers=fresh_address()).status_code == 200
    assert_limit_exceeded(client.post(LOGIN, password_login(localpart(user).title()), headers=fresh_address()))


def test_failed_logins_are_rate_limited_per_account(limited_server: ServerProcess) -> None:
    user = new_user(limited_server.url)
    client = Client(limited_server.url)
    for _ in range(2):
        response = client.post(LOGIN, password_login(user.user_id, "guess"), headers=fresh_address())
        assert response.status_code == 403
    # Even the right password is refused until the limit recovers.
    assert_limit_exceeded(client.post(LOGIN, password_login(user.user_id), headers=fresh_address()))

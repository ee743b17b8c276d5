"""The account: whoami, changing the password and deactivating, both behind the password."""

import requests

from tests.client import PASSWORD, Client
from tests.server import ServerProcess

WHOAMI = "/_matrix/client/v3/account/whoami"
PASSWORD_PATH = "/_matrix/client/v3/account/password"
DEACTIVATE = "/_matrix/client/v3/account/deactivate"
NEW_PASSWORD = "a whole new password"


def second_login(server: ServerProcess, user: Client) -> Client:
    other = Client(server.url)
    assert other.login(user.user_id).status_code == 200
    return other


def assert_password_flow(response: requests.Response) -> str:
    assert response.status_code == 401, response.text
    body = response.json()
    assert {"stages": ["m.login.password"]} in body["flows"]
    return body["session"]


def change_password(user: Client, **extra: object) -> requests.Response:
    session = assert_password_flow(user.post(PASSWORD_PATH, {"new_password": NEW_PASSWORD, **extra}))
    return user.post(
        PASSWORD_PATH, {"new_password": NEW_PASSWORD, "auth": user.password_auth(session=session), **extra}
    )


def deactivate(user: Client) -> requests.Response:
    session = assert_password_flow(user.post(DEACTIVATE, {}))
    return user.post(DEACTIVATE, {"auth": user.password_auth(session=session)})


# -- whoami --------------------------------------------------------------------------------------------------


def test_whoami_names_user_and_device(alice: Client) -> None:
    response = alice.get(WHOAMI)
    assert response.status_code == 200
    assert response.json() == {"user_id": alice.user_id, "device_id": alice.device_id, "is_guest": False}


def test_whoami_accepts_token_in_query_string(alice: Client) -> None:
    response = alice.get(WHOAMI, token=False, params={"access_token": alice.access_token})
    assert response.status_code == 200
    assert response.json()["user_id"] == alice.user_id


def test_whoami_names_the_device_of_the_token_used(server: ServerProcess, alice: Client) -> None:
    other = second_login(server, alice)
    assert other.get(WHOAMI).json()["device_id"] == other.device_id


# -- changing the password ---------------------------------------------------------------------------------


def test_change_password_without_auth_answers_401_with_password_flow(anon: Client, alice: Client) -> None:
    assert_password_flow(alice.post(PASSWORD_PATH, {"new_password": NEW_PASSWORD}))
    assert anon.login(alice.user_id).status_code == 200  # nothing changed


def test_change_password_with_wrong_password_is_refused(anon: Client, alice: Client) -> None:
    session = assert_password_flow(alice.post(PASSWORD_PATH, {"new_password": NEW_PASSWORD}))
    response = alice.post(PASSWORD_PATH, {"new_password": NEW_PASSWORD, "auth": alice.password_auth("no", session)})
    assert response.status_code == 401
    assert response.json()["errcode"] == "M_FORBIDDEN"
    assert anon.login(alice.user_id, NEW_PASSWORD).status_code == 403
    assert anon.login(alice.user_id).status_code == 200


def test_change_password_makes_the_new_password_work_and_the_old_one_fail(anon: Client, alice: Client) -> None:
    assert change_password(alice).status_code == 200
    old = anon.login(alice.user_id, PASSWORD)
    assert old.status_code == 403
    assert old.json()["errcode"] == "M_FORBIDDEN"
    assert anon.login(alice.user_id, NEW_PASSWORD).status_code == 200


def test_change_password_logs_out_other_devices_but_keeps_this_one(server: ServerProcess, alice: Client) -> None:
    other = second_login(server, alice)
    assert change_password(alice, logout_devices=True).status_code == 200
    assert alice.get(WHOAMI).status_code == 200
    response = other.get(WHOAMI)
    assert response.status_code == 401
    assert response.json()["errcode"] == "M_UNKNOWN_TOKEN"
    devices = [d["device_id"] for d in alice.get("/_matrix/client/v3/devices").json()["devices"]]
    assert devices == [alice.device_id]


def test_change_password_logs_out_other_devices_by_default(server: ServerProcess, alice: Client) -> None:
    other = second_login(server, alice)
    assert change_password(alice).status_code == 200
    assert other.get(WHOAMI).status_code == 401
    assert alice.get(WHOAMI).status_code == 200


def test_change_password_without_logout_devices_keeps_other_devices(server: ServerProcess, alice: Client) -> None:
    other = second_login(server, alice)
    assert change_password(alice, logout_devices=False).status_code == 200
    assert other.get(WHOAMI).status_code == 200


def test_password_auth_needs_the_current_password_after_a_change(alice: Client) -> None:
    change_password(alice)
    session = assert_password_flow(alice.post(DEACTIVATE, {}))
    response = alice.post(DEACTIVATE, {"auth": alice.password_auth(PASSWORD, session)})
    assert response.status_code == 401
    assert alice.get(WHOAMI).status_code == 200


# -- deactivating ------------------------------------------------------------------------------------------


def test_deactivate_without_auth_answers_401_with_password_flow(alice: Client) -> None:
    assert_password_flow(alice.post(DEACTIVATE, {}))
    assert alice.get(WHOAMI).status_code == 200


def test_deactivate_with_wrong_password_is_refused(alice: Client) -> None:
    session = assert_password_flow(alice.post(DEACTIVATE, {}))
    response = alice.post(DEACTIVATE, {"auth": alice.password_auth("wrong", session)})
    assert response.status_code == 401
    assert response.json()["errcode"] == "M_FORBIDDEN"
    assert alice.get(WHOAMI).status_code == 200


def test_deactivate_answers_with_unbind_result(alice: Client) -> None:
    response = deactivate(alice)
    assert response.status_code == 200
    assert response.json()["id_server_unbind_result"] in ("success", "no-support")


def test_deactivate_revokes_every_token_at_once(server: ServerProcess, alice: Client) -> None:
    other = second_login(server, alice)
    deactivate(alice)
    for client in (alice, other):
        response = client.get(WHOAMI)
        assert response.status_code == 401
        assert response.json()["errcode"] == "M_UNKNOWN_TOKEN"


def test_login_after_deactivation_gives_user_deactivated(anon: Client, alice: Client) -> None:
    deactivate(alice)
    response = anon.login(alice.user_id)
    assert response.status_code == 403
    assert response.json()["errcode"] == "M_USER_DEACTIVATED"


def test_deactivated_username_cannot_be_registered_again(anon: Client, alice: Client) -> None:
    deactivate(alice)
    localpart = alice.user_id[1:].split(":")[0]
    response = anon.post(
        "/_matrix/client/v3/register", {"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    )
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_USER_IN_USE"


def test_deactivation_leaves_other_users_alone(alice: Client, bob: Client) -> None:
    deactivate(alice)
    assert bob.get(WHOAMI).status_code == 200

"""Devices: listing, looking at and renaming them, and deleting them behind the password."""

import time
from urllib.parse import quote

import requests

from tests.client import Client
from tests.server import ServerProcess

DEVICES = "/_matrix/client/v3/devices"
DELETE_DEVICES = "/_matrix/client/v3/delete_devices"
WHOAMI = "/_matrix/client/v3/account/whoami"


def second_login(server: ServerProcess, user: Client, **extra: object) -> Client:
    other = Client(server.url)
    assert other.login(user.user_id, **extra).status_code == 200
    return other


def device_ids(user: Client) -> set[str]:
    return {d["device_id"] for d in user.get(DEVICES).json()["devices"]}


def assert_password_flow(response: requests.Response) -> str:
    """The 401 of user-interactive auth offering the password stage; returns its session."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert {"stages": ["m.login.password"]} in body["flows"]
    assert isinstance(body["session"], str) and body["session"]
    return body["session"]


# -- looking -----------------------------------------------------------------------------------------------


def test_list_devices_shows_every_login(server: ServerProcess, alice: Client) -> None:
    phone = second_login(server, alice, initial_device_display_name="Phone")
    assert device_ids(alice) == {alice.device_id, phone.device_id}
    names = {d["device_id"]: d["display_name"] for d in alice.get(DEVICES).json()["devices"]}
    assert names[phone.device_id] == "Phone"


def test_list_devices_shows_only_own_devices(alice: Client, bob: Client) -> None:
    assert device_ids(alice) == {alice.device_id}
    assert device_ids(bob) == {bob.device_id}


def test_get_device_returns_its_details(server: ServerProcess, alice: Client) -> None:
    before = int(time.time() * 1000) - 60_000
    phone = second_login(server, alice, initial_device_display_name="Phone")
    response = alice.get(f"{DEVICES}/{phone.device_id}")
    assert response.status_code == 200
    device = response.json()
    assert device["device_id"] == phone.device_id
    assert device["display_name"] == "Phone"
    assert device["last_seen_ip"] == "127.0.0.1"
    assert device["last_seen_ts"] >= before


def test_get_unknown_device_is_not_found(alice: Client) -> None:
    response = alice.get(f"{DEVICES}/NOSUCHDEVICE")
    assert response.status_code == 404
    assert response.json()["errcode"] == "M_NOT_FOUND"


def test_get_another_users_device_is_not_found(alice: Client, bob: Client) -> None:
    assert alice.get(f"{DEVICES}/{bob.device_id}").status_code == 404


def test_device_id_with_reserved_characters_round_trips(server: ServerProcess, alice: Client) -> None:
    odd = "dev/ice?#%1"
    second_login(server, alice, device_id=odd)
    response = alice.get(f"{DEVICES}/{quote(odd, safe='')}")
    assert response.status_code == 200
    assert response.json()["device_id"] == odd


# -- renaming ----------------------------------------------------------------------------------------------


def test_rename_device_changes_its_display_name(alice: Client) -> None:
    response = alice.put(f"{DEVICES}/{alice.device_id}", {"display_name": "Work laptop"})
    assert response.status_code == 200
    assert alice.get(f"{DEVICES}/{alice.device_id}").json()["display_name"] == "Work laptop"


def test_rename_unknown_device_is_not_found(alice: Client) -> None:
    response = alice.put(f"{DEVICES}/NOSUCHDEVICE", {"display_name": "x"})
    assert response.status_code == 404
    assert response.json()["errcode"] == "M_NOT_FOUND"


def test_rename_another_users_device_is_not_found_and_changes_nothing(alice: Client, bob: Client) -> None:
    assert alice.put(f"{DEVICES}/{bob.device_id}", {"display_name": "mine now"}).status_code == 404
    assert bob.get(f"{DEVICES}/{bob.device_id}").json()["display_name"] != "mine now"


# -- deleting one device -----------------------------------------------------------------------------------


def test_delete_device_without_auth_answers_401_with_password_flow(server: ServerProcess, alice: Client) -> None:
    phone = second_login(server, alice)
    assert_password_flow(alice.delete(f"{DEVICES}/{phone.device_id}"))
    assert phone.device_id in device_ids(alice)


def test_delete_device_with_wrong_password_is_refused(server: ServerProcess, alice: Client) -> None:
    phone = second_login(server, alice)
    session = assert_password_flow(alice.delete(f"{DEVICES}/{phone.device_id}"))
    response = alice.delete(f"{DEVICES}/{phone.device_id}", {"auth": alice.password_auth("wrong", session)})
    assert_password_flow(response)
    assert response.json()["errcode"] == "M_FORBIDDEN"
    assert phone.get(WHOAMI).status_code == 200
    assert phone.device_id in device_ids(alice)


def test_delete_device_with_password_removes_it_and_its_token(server: ServerProcess, alice: Client) -> None:
    phone = second_login(server, alice)
    session = assert_password_flow(alice.delete(f"{DEVICES}/{phone.device_id}"))
    response = alice.delete(f"{DEVICES}/{phone.device_id}", {"auth": alice.password_auth(session=session)})
    assert response.status_code == 200, response.text
    assert device_ids(alice) == {alice.device_id}
    gone = phone.get(WHOAMI)
    assert gone.status_code == 401
    assert gone.json()["errcode"] == "M_UNKNOWN_TOKEN"


def test_delete_device_after_a_wrong_password_succeeds_with_the_same_session(
    server: ServerProcess, alice: Client
) -> None:
    phone = second_login(server, alice)
    session = assert_password_flow(alice.delete(f"{DEVICES}/{phone.device_id}"))
    alice.delete(f"{DEVICES}/{phone.device_id}", {"auth": alice.password_auth("wrong", session)})
    response = alice.delete(f"{DEVICES}/{phone.device_id}", {"auth": alice.password_auth(session=session)})
    assert response.status_code == 200
    assert phone.device_id not in device_ids(alice)


def test_delete_device_accepts_the_old_user_field_in_auth(server: ServerProcess, alice: Client) -> None:
    phone = second_login(server, alice)
    session = assert_password_flow(alice.delete(f"{DEVICES}/{phone.device_id}"))
    auth = {
        "type": "m.login.password",
        "user": alice.user_id,
        "password": "correct horse battery staple",
        "session": session,
    }
    assert alice.delete(f"{DEVICES}/{phone.device_id}", {"auth": auth}).status_code == 200


def test_delete_device_with_another_users_password_is_refused(
    server: ServerProcess, alice: Client, bob: Client
) -> None:
    phone = second_login(server, alice)
    session = assert_password_flow(alice.delete(f"{DEVICES}/{phone.device_id}"))
    response = alice.delete(f"{DEVICES}/{phone.device_id}", {"auth": bob.password_auth(session=session)})
    assert response.status_code == 401
    assert phone.device_id in device_ids(alice)


def test_delete_unknown_device_is_not_found(alice: Client) -> None:
    response = alice.delete(f"{DEVICES}/NOSUCHDEVICE", {"auth": alice.password_auth()})
    assert response.status_code == 404


# -- deleting several --------------------------------------------------------------------------------------


def test_delete_devices_without_auth_answers_401_with_password_flow(server: ServerProcess, alice: Client) -> None:
    phone = second_login(server, alice)
    assert_password_flow(alice.post(DELETE_DEVICES, {"devices": [phone.device_id]}))
    assert phone.device_id in device_ids(alice)


def test_delete_devices_with_wrong_password_is_refused(server: ServerProcess, alice: Client) -> None:
    phone = second_login(server, alice)
    session = assert_password_flow(alice.post(DELETE_DEVICES, {"devices": [phone.device_id]}))
    response = alice.post(DELETE_DEVICES, {"devices": [phone.device_id], "auth": alice.password_auth("no", session)})
    assert response.status_code == 401
    assert response.json()["errcode"] == "M_FORBIDDEN"
    assert phone.get(WHOAMI).status_code == 200


def test_delete_devices_with_password_removes_them_and_their_tokens(server: ServerProcess, alice: Client) -> None:
    phone, tablet, laptop = (second_login(server, alice) for _ in range(3))
    targets = [phone.device_id, tablet.device_id]
    session = assert_password_flow(alice.post(DELETE_DEVICES, {"devices": targets}))
    response = alice.post(DELETE_DEVICES, {"devices": targets, "auth": alice.password_auth(session=session)})
    assert response.status_code == 200, response.text
    assert device_ids(alice) == {alice.device_id, laptop.device_id}
    assert phone.get(WHOAMI).status_code == 401
    assert tablet.get(WHOAMI).status_code == 401
    assert laptop.get(WHOAMI).status_code == 200


def test_delete_devices_ignores_unknown_ids(alice: Client) -> None:
    session = assert_password_flow(alice.post(DELETE_DEVICES, {"devices": ["NOSUCHDEVICE"]}))
    body = {"devices": ["NOSUCHDEVICE"], "auth": alice.password_auth(session=session)}
    assert alice.post(DELETE_DEVICES, body).status_code == 200
    assert alice.get(WHOAMI).status_code == 200

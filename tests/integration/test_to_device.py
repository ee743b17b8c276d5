"""Send-to-device messages through HTTP, read back the way /sync reads them: from the server's database
through the to-device handler's own calls (messages_for, delete_up_to)."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from homeserver.app import HomeServer
from homeserver.config import load_config
from tests.client import Client, RoomClient
from tests.inline import resolve
from tests.server import ServerProcess

SEND = "/_matrix/client/v3/sendToDevice"


@pytest.fixture(scope="module")
def beside(server: ServerProcess) -> Iterator[HomeServer]:
    """The server's code on the server's database, in this process: the reading side of a sync."""
    hs = HomeServer(load_config(str(server.config_path)))
    yield hs
    hs.db.close()


def send(client: Client, messages: Any, event_type: str = "m.test", txn_id: str | None = None) -> requests.Response:
    return client.put(f"{SEND}/{event_type}/{txn_id or uuid.uuid4().hex}", {"messages": messages})


def ok(response: requests.Response) -> None:
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    assert response.json() == {}


def position(hs: HomeServer) -> int:
    return resolve(hs.to_device.current_position())


def inbox(hs: HomeServer, client: Client, after: int, limit: int = 100) -> list[dict[str, Any]]:
    messages, _ = resolve(hs.to_device.messages_for(client.user_id, client.device_id, after, position(hs), limit))
    return messages


def second_login(server: ServerProcess, user: Client) -> RoomClient:
    other = RoomClient(server.url)
    assert other.login(user.user_id or "").status_code == 200
    return other


def test_a_message_reaches_the_named_device_only(
    server: ServerProcess, beside: HomeServer, alice: Client, bob: Client
) -> None:
    phone = second_login(server, bob)
    start = position(beside)
    ok(send(alice, {bob.user_id: {bob.device_id: {"secret": 1}}}, "m.room_key_request"))
    assert inbox(beside, bob, start) == [
        {"type": "m.room_key_request", "sender": alice.user_id, "content": {"secret": 1}}
    ]
    assert inbox(beside, phone, start) == []


def test_a_star_reaches_every_device_of_the_user(
    server: ServerProcess, beside: HomeServer, alice: Client, bob: Client, carol: Client
) -> None:
    phone = second_login(server, bob)
    start = position(beside)
    ok(send(alice, {bob.user_id: {"*": {"n": 1}}, carol.user_id: {carol.device_id: {"n": 2}}}))
    for device in (bob, phone):
        assert inbox(beside, device, start) == [{"type": "m.test", "sender": alice.user_id, "content": {"n": 1}}]
    assert [m["content"] for m in inbox(beside, carol, start)] == [{"n": 2}]


def test_a_retried_transaction_delivers_once(beside: HomeServer, alice: Client, bob: Client) -> None:
    start = position(beside)
    for _ in range(2):
        ok(send(alice, {bob.user_id: {bob.device_id: {"n": 1}}}, txn_id="txn1"))
    ok(send(alice, {bob.user_id: {bob.device_id: {"n": 2}}}, txn_id="txn2"))
    # The same transaction id on another path (event type) is another request.
    ok(send(alice, {bob.user_id: {bob.device_id: {"n": 3}}}, event_type="m.other", txn_id="txn1"))
    assert [m["content"]["n"] for m in inbox(beside, bob, start)] == [1, 2, 3]


def test_the_same_transaction_id_from_another_device_is_another_request(
    server: ServerProcess, beside: HomeServer, alice: Client, bob: Client
) -> None:
    laptop = second_login(server, alice)
    start = position(beside)
    for sender in (alice, laptop):
        ok(send(sender, {bob.user_id: {bob.device_id: {}}}, txn_id="same"))
    assert len(inbox(beside, bob, start)) == 2


def test_messages_come_oldest_first_and_go_once_acknowledged(beside: HomeServer, alice: Client, bob: Client) -> None:
    start = position(beside)
    for n in range(3):
        ok(send(alice, {bob.user_id: {bob.device_id: {"n": n}}}))
    upto = position(beside)
    first_page, page_end = resolve(beside.to_device.messages_for(bob.user_id, bob.device_id, start, upto, 2))
    assert [m["content"]["n"] for m in first_page] == [0, 1]
    resolve(beside.to_device.delete_up_to(bob.user_id, bob.device_id, page_end))  # the next sync acknowledges
    rest, rest_end = resolve(beside.to_device.messages_for(bob.user_id, bob.device_id, start, upto, 2))
    assert [m["content"]["n"] for m in rest] == [2] and rest_end == upto
    resolve(beside.to_device.delete_up_to(bob.user_id, bob.device_id, upto))
    assert inbox(beside, bob, start) == []


def test_messages_to_unknown_devices_users_and_servers_are_dropped(
    beside: HomeServer, alice: Client, bob: Client
) -> None:
    start = position(beside)
    messages = {
        bob.user_id: {"NOSUCHDEVICE": {}},
        "@nobody_here:localhost": {"*": {}},
        "@someone:remote.example": {"DEV": {}},
    }
    ok(send(alice, messages))
    assert position(beside) == start


def test_a_deleted_device_loses_its_inbox(
    server: ServerProcess, beside: HomeServer, alice: Client, bob: Client
) -> None:
    phone = second_login(server, bob)
    start = position(beside)
    ok(send(alice, {bob.user_id: {phone.device_id: {"n": 1}}}))
    assert len(inbox(beside, phone, start)) == 1
    assert phone.post("/_matrix/client/v3/logout").status_code == 200
    assert inbox(beside, phone, start) == []


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({}, "M_MISSING_PARAM"),
        ({"messages": []}, "M_INVALID_PARAM"),
        ({"messages": {"not-a-user": {"DEV": {}}}}, "M_INVALID_PARAM"),
        ({"messages": {"@a:localhost": ["DEV"]}}, "M_BAD_JSON"),
        ({"messages": {"@a:localhost": {"DEV": "content"}}}, "M_BAD_JSON"),
        ({"messages": {"@a:localhost": {"": {}}}}, "M_BAD_JSON"),
    ],
)
def test_malformed_requests_are_refused(alice: Client, body: dict[str, Any], errcode: str) -> None:
    response = alice.put(f"{SEND}/m.test/{uuid.uuid4().hex}", body)
    assert response.status_code == 400, response.text
    assert response.json()["errcode"] == errcode


def test_sending_needs_an_access_token(anon: Client) -> None:
    response = anon.put(f"{SEND}/m.test/txn", {"messages": {}})
    assert response.status_code == 401 and response.json()["errcode"] == "M_MISSING_TOKEN"


def test_an_overlong_transaction_id_is_refused(alice: Client, bob: Client) -> None:
    response = send(alice, {bob.user_id: {bob.device_id: {}}}, txn_id="x" * 2000)
    assert response.status_code == 400 and response.json()["errcode"] == "M_INVALID_PARAM"

"""Sending into rooms: messages (idempotent per device and transaction id), state, redactions."""

import secrets
import uuid

import pytest
import requests

from tests.client import Client, RoomClient, assert_error, quote
from tests.integration.servers import at_once
from tests.server import ServerProcess

ROOMS = "/_matrix/client/v3/rooms"


def send(user: Client, room: str, txn: str, body: str = "hi", event_type: str = "m.room.message") -> requests.Response:
    return user.put(f"{ROOMS}/{quote(room)}/send/{event_type}/{quote(txn)}", {"msgtype": "m.text", "body": body})


def redact(user: Client, room: str, event_id: str, txn: str | None = None, **body: str) -> requests.Response:
    return user.put(f"{ROOMS}/{quote(room)}/redact/{quote(event_id)}/{txn or uuid.uuid4().hex}", body)


def event_id_of(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    event_id = response.json()["event_id"]
    assert isinstance(event_id, str) and event_id.startswith("$")
    return event_id


def second_device(server: ServerProcess, user: RoomClient) -> RoomClient:
    other = RoomClient(server.url)
    assert other.login(user.user_id).status_code == 200
    return other


# -- messages --------------------------------------------------------------------------------------------


def test_send_returns_a_new_event_each_time(alice: RoomClient) -> None:
    room = alice.create_room()
    ids = {event_id_of(send(alice, room, uuid.uuid4().hex)) for _ in range(3)}
    assert len(ids) == 3


def test_retried_transaction_returns_the_same_event(alice: RoomClient) -> None:
    room = alice.create_room()
    first = event_id_of(send(alice, room, "txn1"))
    assert event_id_of(send(alice, room, "txn1", body="changed on retry")) == first
    assert event_id_of(send(alice, room, "txn2")) != first


def test_concurrent_retries_make_one_event(alice: RoomClient) -> None:
    room = alice.create_room()
    ids = at_once(6, lambda: event_id_of(send(alice, room, "racing")))
    assert len(set(ids)) == 1


def test_transaction_ids_are_per_device(server: ServerProcess, alice: RoomClient) -> None:
    room = alice.create_room()
    phone = second_device(server, alice)
    assert event_id_of(send(alice, room, "same")) != event_id_of(send(phone, room, "same"))


def test_transaction_ids_are_per_user(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    assert event_id_of(send(alice, room, "same")) != event_id_of(send(bob, room, "same"))


def test_same_transaction_id_on_another_path_is_a_new_request(alice: RoomClient) -> None:
    """The spec: a retransmission has the same transaction id *and* the same path."""
    room, other_room = alice.create_room(), alice.create_room()
    message = event_id_of(send(alice, room, "reused"))
    assert event_id_of(send(alice, other_room, "reused")) != message
    assert event_id_of(send(alice, room, "reused", event_type="m.reaction")) != message
    redaction = event_id_of(redact(alice, room, message, txn="reused"))
    assert redaction != message
    assert event_id_of(redact(alice, room, message, txn="reused")) == redaction


def test_long_transaction_id_works(alice: RoomClient) -> None:
    room = alice.create_room()
    txn = secrets.token_hex(512)  # random, so the database cannot compress it into its index row limit
    first = event_id_of(send(alice, room, txn))
    assert event_id_of(send(alice, room, txn)) == first


def test_overlong_transaction_id_is_refused(alice: RoomClient) -> None:
    room = alice.create_room()
    assert_error(send(alice, room, secrets.token_hex(2000)), 400, "M_INVALID_PARAM")


def test_send_needs_a_token(alice: RoomClient, anon: Client) -> None:
    room = alice.create_room()
    assert_error(send(anon, room, "t"), 401, "M_MISSING_TOKEN")


def test_non_member_cannot_send(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    assert_error(send(bob, room, "t"), 403, "M_FORBIDDEN")


def test_member_who_left_cannot_send(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    event_id_of(send(bob, room, "before"))
    bob.leave(room)
    assert_error(send(bob, room, "after"), 403, "M_FORBIDDEN")


def test_send_to_unknown_room_is_not_found(alice: RoomClient) -> None:
    assert_error(send(alice, "!unknown:localhost", "t"), 404, "M_NOT_FOUND")


def test_send_body_must_be_a_json_object(alice: RoomClient) -> None:
    room = alice.create_room()
    path = f"{ROOMS}/{quote(room)}/send/m.room.message/t"
    assert_error(alice.request("PUT", path, data=b"not json"), 400, "M_NOT_JSON")
    assert_error(alice.put(path, [1, 2]), 400, "M_BAD_JSON")


def test_events_default_power_level_gates_messages(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat", power_level_content_override={"events_default": 10})
    bob.join(room)
    assert_error(send(bob, room, "t"), 403, "M_FORBIDDEN")
    event_id_of(send(alice, room, "t"))


@pytest.mark.parametrize("version", ["1", "3", "6", "10", "11", "12"])
def test_send_and_redact_in_room_version(alice: RoomClient, version: str) -> None:
    room = alice.create_room(room_version=version)
    message = event_id_of(send(alice, room, "m"))
    event_id_of(redact(alice, room, message, reason="oops"))


# -- state -----------------------------------------------------------------------------------------------


def test_room_admin_sets_state(alice: RoomClient) -> None:
    room = alice.create_room()
    first = alice.send_state(room, "m.room.name", {"name": "One"})
    assert alice.send_state(room, "m.room.name", {"name": "Two"}) != first
    alice.send_state(room, "org.example.custom", {"x": 1}, state_key="some-key")


def test_state_with_empty_key_by_trailing_slash_or_without(alice: RoomClient) -> None:
    room = alice.create_room()
    for path in (f"{ROOMS}/{quote(room)}/state/m.room.topic", f"{ROOMS}/{quote(room)}/state/m.room.topic/"):
        event_id_of(alice.put(path, {"topic": "hello"}))


def test_normal_user_cannot_change_room_state(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    path = f"{ROOMS}/{quote(room)}/state"
    assert_error(bob.put(f"{path}/m.room.name/", {"name": "mine"}), 403, "M_FORBIDDEN")
    assert_error(bob.put(f"{path}/m.room.power_levels/", {"users": {bob.user_id: 100}}), 403, "M_FORBIDDEN")
    assert_error(bob.put(f"{path}/m.room.join_rules/", {"join_rule": "invite"}), 403, "M_FORBIDDEN")


def test_state_key_of_another_user_is_refused(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room()
    path = f"{ROOMS}/{quote(room)}/state/org.example.profile/{quote(bob.user_id)}"
    assert_error(alice.put(path, {}), 403, "M_FORBIDDEN")


def test_member_events_need_the_membership_endpoints(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room()
    path = f"{ROOMS}/{quote(room)}/state/m.room.member/{quote(bob.user_id)}"
    assert_error(alice.put(path, {"membership": "invite"}), 400, "M_BAD_JSON")


def test_non_member_cannot_set_state(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    assert_error(bob.put(f"{ROOMS}/{quote(room)}/state/m.room.topic/", {"topic": "x"}), 403, "M_FORBIDDEN")


# -- redactions ------------------------------------------------------------------------------------------


def test_sender_redacts_own_event_without_power(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    message = event_id_of(send(bob, room, "m"))
    event_id_of(redact(bob, room, message))


def test_redacting_others_events_needs_power(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    message = event_id_of(send(alice, room, "m"))
    assert_error(redact(bob, room, message), 403, "M_FORBIDDEN")


def test_moderator_redacts_others_events(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    message = event_id_of(send(bob, room, "m"))
    event_id_of(redact(alice, room, message, reason="spam"))


def test_redact_power_level_can_be_lowered(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat", power_level_content_override={"redact": 0})
    bob.join(room)
    message = event_id_of(send(alice, room, "m"))
    event_id_of(redact(bob, room, message))


def test_non_member_cannot_redact(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    message = event_id_of(send(bob, room, "m"))
    bob.leave(room)
    assert_error(redact(bob, room, message), 403, "M_FORBIDDEN")


def test_redact_is_idempotent_per_transaction(alice: RoomClient) -> None:
    room = alice.create_room()
    message = event_id_of(send(alice, room, "m"))
    first = event_id_of(redact(alice, room, message, txn="r1"))
    assert event_id_of(redact(alice, room, message, txn="r1")) == first


def test_redact_unknown_event_is_not_found(alice: RoomClient) -> None:
    room, other = alice.create_room(), alice.create_room()
    assert_error(redact(alice, room, "$nope"), 404, "M_NOT_FOUND")
    elsewhere = event_id_of(send(alice, other, "m"))
    assert_error(redact(alice, room, elsewhere), 404, "M_NOT_FOUND")


def test_redact_without_body(alice: RoomClient) -> None:
    room = alice.create_room()
    message = event_id_of(send(alice, room, "m"))
    path = f"{ROOMS}/{quote(room)}/redact/{quote(message)}/{uuid.uuid4().hex}"
    event_id_of(alice.request("PUT", path, data=b""))


def get_event(user: RoomClient, room: str, event_id: str) -> dict:
    response = user.room_get(room, f"event/{quote(event_id)}")
    assert response.status_code == 200, response.text
    return response.json()


def test_redacted_event_loses_its_content(alice: RoomClient) -> None:
    room = alice.create_room()
    message = event_id_of(send(alice, room, "m", body="regret"))
    assert get_event(alice, room, message)["content"]["body"] == "regret"
    redaction = event_id_of(redact(alice, room, message, reason="oops"))
    event = get_event(alice, room, message)
    assert event["content"] == {}
    assert event["unsigned"]["redacted_because"]["event_id"] == redaction


@pytest.mark.parametrize("version", ["11", "12"])
def test_redaction_sent_as_a_message_needs_the_same_power(alice: RoomClient, bob: RoomClient, version: str) -> None:
    """From v11 `redacts` is in the content, so /send can make a redaction: it is checked like /redact."""
    room = alice.create_room(preset="public_chat", room_version=version)
    bob.join(room)
    message = event_id_of(send(alice, room, "m", body="keep me"))
    path = f"{ROOMS}/{quote(room)}/send/m.room.redaction/{uuid.uuid4().hex}"
    assert_error(bob.put(path, {"redacts": message}), 403, "M_FORBIDDEN")
    state_path = f"{ROOMS}/{quote(room)}/state/m.room.redaction/"
    assert_error(bob.put(state_path, {"redacts": message}), 403, "M_FORBIDDEN")
    assert get_event(alice, room, message)["content"]["body"] == "keep me"
    own = event_id_of(send(bob, room, "m", body="mine"))
    event_id_of(bob.put(path, {"redacts": own}))
    assert get_event(alice, room, own)["content"] == {}


def test_message_content_is_kept(alice: RoomClient) -> None:
    room = alice.create_room()
    content = {"msgtype": "m.text", "body": "hello", "nested": {"list": [1, "two", None, True]}}
    event_id = event_id_of(alice.put(f"{ROOMS}/{quote(room)}/send/m.room.message/c1", content))
    event = get_event(alice, room, event_id)
    assert event["content"] == content
    assert event["sender"] == alice.user_id
    assert event["type"] == "m.room.message"


def test_oversized_event_is_refused(alice: RoomClient) -> None:
    room = alice.create_room()
    response = alice.put(f"{ROOMS}/{quote(room)}/send/m.room.message/big", {"body": "x" * 70_000})
    assert_error(response, 413, "M_TOO_LARGE")


def test_floats_are_refused_where_canonical_json_is_enforced(alice: RoomClient) -> None:
    room = alice.create_room(room_version="12")
    response = alice.put(f"{ROOMS}/{quote(room)}/send/m.room.message/f", {"body": "x", "n": 1.5})
    assert_error(response, 400, "M_BAD_JSON")

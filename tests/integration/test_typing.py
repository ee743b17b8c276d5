"""PUT /rooms/{roomId}/typing/{userId} over HTTP: who may say they are typing, and the shape of the
request. What others see of it comes through /sync; expiry is in tests/unit/test_typing.py."""

from typing import Any

from tests.client import RoomClient, error, ok, quote


def typing(client: RoomClient, room_id: str, body: Any, user_id: str | None = None, **kwargs: Any) -> Any:
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/typing/{quote(user_id or client.user_id or '')}"
    return client.put(path, body, **kwargs)


def test_member_starts_and_stops_typing(alice: RoomClient) -> None:
    room = alice.create_room()
    assert ok(typing(alice, room, {"typing": True, "timeout": 30000})) == {}
    assert ok(typing(alice, room, {"typing": True, "timeout": 30000})) == {}  # still typing: a new expiry
    assert ok(typing(alice, room, {"typing": False})) == {}
    assert ok(typing(alice, room, {"typing": False})) == {}  # not typing any more: nothing to do


def test_timeout_may_be_left_out_or_be_huge(alice: RoomClient) -> None:
    room = alice.create_room()
    assert ok(typing(alice, room, {"typing": True})) == {}
    assert ok(typing(alice, room, {"typing": True, "timeout": 10**12})) == {}


def test_nobody_may_type_for_someone_else(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    assert error(typing(bob, room, {"typing": True, "timeout": 1000}, user_id=alice.user_id), 403) == "M_FORBIDDEN"


def test_only_joined_members_may_type(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    assert error(typing(bob, room, {"typing": True, "timeout": 1000}), 403) == "M_FORBIDDEN"
    alice.invite(room, bob.user_id or "")
    assert error(typing(bob, room, {"typing": True, "timeout": 1000}), 403) == "M_FORBIDDEN"
    bob.join(room)
    ok(typing(bob, room, {"typing": True, "timeout": 1000}))
    bob.leave(room)
    assert error(typing(bob, room, {"typing": False}), 403) == "M_FORBIDDEN"
    assert error(typing(bob, "!unknown:localhost", {"typing": True}), 403) == "M_FORBIDDEN"


def test_malformed_requests_are_refused(alice: RoomClient) -> None:
    room = alice.create_room()
    assert error(typing(alice, room, {"timeout": 1000}), 400) == "M_MISSING_PARAM"
    assert error(typing(alice, room, {"typing": "yes"}), 400) == "M_INVALID_PARAM"
    assert error(typing(alice, room, {"typing": True, "timeout": "soon"}), 400) == "M_INVALID_PARAM"
    assert error(typing(alice, room, {"typing": True, "timeout": True}), 400) == "M_INVALID_PARAM"
    assert error(typing(alice, room, ["typing"]), 400) == "M_BAD_JSON"
    assert error(typing(alice, room, {"typing": True}, token=False), 401) == "M_MISSING_TOKEN"

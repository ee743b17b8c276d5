"""Profiles: display name and avatar, and their copies in the member events of the user's rooms."""

import uuid
from typing import Any

import pytest
import requests

from tests.client import Client, RoomClient, assert_error, ok, quote
from tests.server import ServerProcess

PROFILE = "/_matrix/client/v3/profile"


def set_field(user: Client, field: str, value: Any, target: str | None = None) -> requests.Response:
    return user.put(f"{PROFILE}/{quote(target or user.user_id)}/{field}", {field: value})


def profile(viewer: Client, user_id: str) -> dict[str, Any]:
    return ok(viewer.get(f"{PROFILE}/{quote(user_id)}"))


def member(viewer: RoomClient, room: str, user: Client) -> dict[str, Any]:
    return ok(viewer.room_get(room, f"state/m.room.member/{quote(user.user_id)}"))


# -- reading and writing ---------------------------------------------------------------------------------


def test_new_user_is_displayed_by_localpart(alice: RoomClient) -> None:
    localpart = alice.user_id[1:].split(":")[0]
    assert profile(alice, alice.user_id) == {"displayname": localpart}
    assert_error(alice.get(f"{PROFILE}/{quote(alice.user_id)}/avatar_url"), 404, "M_NOT_FOUND")


def test_set_and_get_displayname(alice: RoomClient, bob: RoomClient) -> None:
    ok(set_field(alice, "displayname", "Alice A."))
    assert ok(bob.get(f"{PROFILE}/{quote(alice.user_id)}/displayname")) == {"displayname": "Alice A."}
    assert profile(bob, alice.user_id) == {"displayname": "Alice A."}


def test_set_and_get_avatar_url(alice: RoomClient, bob: RoomClient) -> None:
    ok(set_field(alice, "avatar_url", "mxc://localhost/abc"))
    assert ok(bob.get(f"{PROFILE}/{quote(alice.user_id)}/avatar_url")) == {"avatar_url": "mxc://localhost/abc"}
    ok(set_field(alice, "displayname", "Alice"))
    assert profile(bob, alice.user_id) == {"displayname": "Alice", "avatar_url": "mxc://localhost/abc"}


def test_profile_is_readable_without_a_token(alice: RoomClient, anon: Client) -> None:
    ok(set_field(alice, "displayname", "Public Alice"))
    assert profile(anon, alice.user_id) == {"displayname": "Public Alice"}


def test_displayname_can_be_cleared(alice: RoomClient) -> None:
    ok(set_field(alice, "displayname", "Temporary"))
    ok(set_field(alice, "displayname", None))
    assert profile(alice, alice.user_id) == {}


def test_cannot_change_another_users_profile(alice: RoomClient, bob: RoomClient) -> None:
    before = profile(bob, alice.user_id)
    assert_error(set_field(bob, "displayname", "Not Alice", target=alice.user_id), 403, "M_FORBIDDEN")
    assert profile(bob, alice.user_id) == before


def test_setting_profile_needs_a_token(alice: RoomClient, anon: Client) -> None:
    assert_error(
        anon.put(f"{PROFILE}/{quote(alice.user_id)}/displayname", {"displayname": "x"}), 401, "M_MISSING_TOKEN"
    )


def test_unknown_user_has_no_profile(server: ServerProcess, alice: RoomClient) -> None:
    user = f"@nobody{uuid.uuid4().hex[:8]}:{server.config['server_name']}"
    assert_error(alice.get(f"{PROFILE}/{quote(user)}"), 404, "M_NOT_FOUND")
    assert_error(alice.get(f"{PROFILE}/{quote(user)}/displayname"), 404, "M_NOT_FOUND")


def test_remote_profile_of_an_unreachable_server_is_a_502(alice: RoomClient) -> None:
    """Asked over federation (tests/integration/test_federation_identity.py); 127.0.0.2 is blacklisted."""
    assert_error(alice.get(f"{PROFILE}/{quote('@bob:127.0.0.2:8448')}"), 502, "M_UNKNOWN")


def test_malformed_user_id_is_refused(alice: RoomClient) -> None:
    assert_error(alice.get(f"{PROFILE}/bob"), 400, "M_INVALID_PARAM")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("displayname", 5),
        ("displayname", "x" * 257),
        ("avatar_url", "https://example.org/a.png"),
        ("avatar_url", ["mxc://localhost/a"]),
    ],
)
def test_invalid_values_are_refused(alice: RoomClient, field: str, value: Any) -> None:
    before = profile(alice, alice.user_id)
    assert_error(set_field(alice, field, value), 400, "M_INVALID_PARAM")
    assert profile(alice, alice.user_id) == before


def test_value_is_required(alice: RoomClient) -> None:
    assert_error(alice.put(f"{PROFILE}/{quote(alice.user_id)}/displayname", {}), 400, "M_MISSING_PARAM")


def test_unknown_field_is_unrecognized(alice: RoomClient) -> None:
    assert_error(set_field(alice, "pronouns", "she/her"), 404, "M_UNRECOGNIZED")


# -- member events ---------------------------------------------------------------------------------------


def test_displayname_change_updates_member_event_in_every_joined_room(alice: RoomClient, bob: RoomClient) -> None:
    rooms = [alice.create_room(preset="public_chat") for _ in range(3)]
    for room in rooms:
        bob.join(room)
    ok(set_field(bob, "displayname", "Bob B."))
    ok(set_field(bob, "avatar_url", "mxc://localhost/bob"))
    for room in rooms:
        assert member(alice, room, bob) == {
            "membership": "join",
            "displayname": "Bob B.",
            "avatar_url": "mxc://localhost/bob",
        }
        joined = ok(alice.room_get(room, "joined_members"))["joined"]
        assert joined[bob.user_id] == {"display_name": "Bob B.", "avatar_url": "mxc://localhost/bob"}


def test_cleared_displayname_leaves_the_member_event(alice: RoomClient) -> None:
    ok(set_field(alice, "displayname", "Named"))
    room = alice.create_room()
    assert member(alice, room, alice)["displayname"] == "Named"
    ok(set_field(alice, "displayname", None))
    assert "displayname" not in member(alice, room, alice)


def test_profile_change_leaves_rooms_one_left_alone(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    bob.leave(room)
    ok(set_field(bob, "displayname", "Gone Bob"))
    assert member(alice, room, bob) == {"membership": "leave"}


def test_profile_change_leaves_invites_alone(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(invite=[bob.user_id])
    ok(set_field(bob, "displayname", "Invited Bob"))
    assert member(alice, room, bob) == {"membership": "invite"}


def test_new_room_and_join_carry_the_profile(alice: RoomClient, bob: RoomClient) -> None:
    ok(set_field(alice, "displayname", "Creator"))
    ok(set_field(bob, "avatar_url", "mxc://localhost/joiner"))
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    assert member(alice, room, alice) == {"membership": "join", "displayname": "Creator"}
    localpart = bob.user_id[1:].split(":")[0]
    assert member(alice, room, bob) == {
        "membership": "join",
        "displayname": localpart,
        "avatar_url": "mxc://localhost/joiner",
    }

"""Membership: join (by id and alias), invite, leave, forget, kick, ban, unban, knock."""

import uuid
from typing import Any

import pytest
import requests

from tests.client import Client, RoomClient, assert_error, ok, quote
from tests.server import ServerProcess

V3 = "/_matrix/client/v3"


def assert_error_with_message(response: requests.Response, status: int, errcode: str) -> str:
    """Asserts the error and returns its message, which must say something."""
    body = assert_error(response, status, errcode)
    assert body.get("error"), response.text
    return body["error"]


def act(user: Client, room: str, action: str, **body: Any) -> requests.Response:
    """POST /rooms/{roomId}/{action}: join, leave, forget, invite, kick, ban, unban."""
    return user.post(f"{V3}/rooms/{quote(room)}/{action}", body)


def join(user: Client, room: str, **body: Any) -> requests.Response:
    return user.post(f"{V3}/join/{quote(room)}", body)


def knock(user: Client, room: str, **body: Any) -> requests.Response:
    return user.post(f"{V3}/knock/{quote(room)}", body)


def joined_rooms(user: Client) -> list[str]:
    return ok(user.get(f"{V3}/joined_rooms"))["joined_rooms"]


def member(viewer: RoomClient, room: str, user: Client) -> dict[str, Any]:
    """The content of `user`'s member event in `room`, as `viewer` sees it."""
    return ok(viewer.room_get(room, f"state/m.room.member/{quote(user.user_id)}"))


def membership(viewer: RoomClient, room: str, user: Client) -> str:
    return member(viewer, room, user)["membership"]


def knock_room(owner: RoomClient, version: str = "12") -> str:
    return owner.create_room(
        room_version=version, initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]
    )


# -- joining ---------------------------------------------------------------------------------------------


def test_join_public_room_by_id(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    assert ok(act(bob, room, "join"))["room_id"] == room
    assert room in joined_rooms(bob)
    assert membership(alice, room, bob) == "join"


def test_join_by_id_through_the_generic_endpoint(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    assert ok(join(bob, room))["room_id"] == room


def test_join_by_alias(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    word = "j" + uuid.uuid4().hex[:10]
    room = alice.create_room(preset="public_chat", room_alias_name=word)
    assert ok(join(bob, f"#{word}:{server.config['server_name']}"))["room_id"] == room
    assert room in joined_rooms(bob)


def test_join_carries_reason_and_profile(alice: RoomClient, bob: RoomClient) -> None:
    ok(bob.put(f"{V3}/profile/{quote(bob.user_id)}/displayname", {"displayname": "Bobby"}))
    room = alice.create_room(preset="public_chat")
    ok(join(bob, room, reason="saying hi"))
    content = member(alice, room, bob)
    assert content["reason"] == "saying hi"
    assert content["displayname"] == "Bobby"


def test_join_twice_is_fine(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    assert ok(join(bob, room))["room_id"] == room
    assert joined_rooms(bob).count(room) == 1


def test_join_unknown_room_or_alias_is_not_found(server: ServerProcess, bob: RoomClient) -> None:
    assert_error_with_message(join(bob, "!unknown:localhost"), 404, "M_NOT_FOUND")
    assert_error_with_message(
        join(bob, f"#unknown{uuid.uuid4().hex}:{server.config['server_name']}"), 404, "M_NOT_FOUND"
    )


def test_join_by_alias_of_an_unreachable_server_is_a_502(bob: RoomClient) -> None:
    assert_error_with_message(join(bob, "#room:example.org"), 502, "M_UNKNOWN")


def test_join_needs_a_room_id_or_alias(bob: RoomClient) -> None:
    assert_error_with_message(join(bob, "room"), 400, "M_INVALID_PARAM")


def test_join_needs_a_token(alice: RoomClient, anon: Client) -> None:
    room = alice.create_room(preset="public_chat")
    assert_error_with_message(join(anon, room), 401, "M_MISSING_TOKEN")


def test_invite_only_room_refuses_uninvited_with_a_reason(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="private_chat")
    assert_error_with_message(join(bob, room), 403, "M_FORBIDDEN")
    assert room not in joined_rooms(bob)


# -- inviting --------------------------------------------------------------------------------------------


def test_invited_user_joins_invite_only_room(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="private_chat")
    ok(act(alice, room, "invite", user_id=bob.user_id, reason="come along"))
    invite = member(alice, room, bob)
    assert invite["membership"] == "invite"
    assert invite["reason"] == "come along"
    assert room not in joined_rooms(bob)
    bob.join(room)
    assert membership(alice, room, bob) == "join"


def test_invite_of_unknown_user_is_not_found(server: ServerProcess, alice: RoomClient) -> None:
    room = alice.create_room()
    user = f"@nobody{uuid.uuid4().hex[:8]}:{server.config['server_name']}"
    assert_error_with_message(act(alice, room, "invite", user_id=user), 404, "M_NOT_FOUND")


def test_invite_of_a_user_on_an_unreachable_server_is_a_502_and_invites_no_one(alice: RoomClient) -> None:
    room = alice.create_room()
    assert_error_with_message(act(alice, room, "invite", user_id="@bob:example.org"), 502, "M_UNKNOWN")
    member = alice.room_get(room, f"state/m.room.member/{quote('@bob:example.org')}")
    assert member.status_code == 404, member.text


def test_invite_needs_a_valid_user_id(alice: RoomClient) -> None:
    room = alice.create_room()
    assert_error_with_message(act(alice, room, "invite", user_id="bob"), 400, "M_INVALID_PARAM")
    assert_error_with_message(act(alice, room, "invite"), 400, "M_MISSING_PARAM")


def test_invite_of_member_is_refused(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    assert_error_with_message(act(alice, room, "invite", user_id=bob.user_id), 403, "M_FORBIDDEN")


def test_non_member_cannot_invite(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = alice.create_room(preset="private_chat")
    assert_error_with_message(act(bob, room, "invite", user_id=carol.user_id), 403, "M_FORBIDDEN")


def test_invite_to_unknown_room_is_not_found(alice: RoomClient, bob: RoomClient) -> None:
    assert_error_with_message(act(alice, "!unknown:localhost", "invite", user_id=bob.user_id), 404, "M_NOT_FOUND")


def test_invitee_rejects_by_leaving(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="private_chat", invite=[bob.user_id])
    ok(act(bob, room, "leave"))
    assert membership(alice, room, bob) == "leave"
    assert_error_with_message(join(bob, room), 403, "M_FORBIDDEN")


def test_inviter_can_rescind_invite_by_kicking(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="private_chat", invite=[bob.user_id])
    ok(act(alice, room, "kick", user_id=bob.user_id))
    assert_error_with_message(join(bob, room), 403, "M_FORBIDDEN")


# -- leaving and forgetting ------------------------------------------------------------------------------


def test_leave_removes_from_joined_rooms(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    ok(act(bob, room, "leave", reason="bye"))
    assert room not in joined_rooms(bob)
    assert member(alice, room, bob) == {"membership": "leave", "reason": "bye"}


def test_leave_a_room_one_is_not_in_is_refused(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    assert_error_with_message(act(bob, room, "leave"), 403, "M_FORBIDDEN")
    bob.join(room)
    bob.leave(room)
    assert_error_with_message(act(bob, room, "leave"), 403, "M_FORBIDDEN")


def test_leave_unknown_room_is_not_found(bob: RoomClient) -> None:
    assert_error_with_message(act(bob, "!unknown:localhost", "leave"), 404, "M_NOT_FOUND")


def test_rejoin_after_leaving(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    bob.leave(room)
    assert bob.join(room) == room
    assert room in joined_rooms(bob)


def test_forget_after_leaving(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    bob.leave(room)
    ok(act(bob, room, "forget"))
    ok(act(bob, room, "forget"))  # forgetting twice is harmless
    assert bob.join(room) == room  # and a forgotten room can be joined again


def test_forget_while_joined_is_refused(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    assert_error_with_message(act(bob, room, "forget"), 400, "M_UNKNOWN")
    assert room in joined_rooms(bob)


def test_forget_while_invited_is_refused(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(invite=[bob.user_id])
    assert_error_with_message(act(bob, room, "forget"), 400, "M_UNKNOWN")


def test_forget_a_room_never_joined_is_not_found(alice: RoomClient, bob: RoomClient) -> None:
    assert_error_with_message(act(bob, alice.create_room(), "forget"), 404, "M_NOT_FOUND")


def test_banned_user_may_forget(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    ok(act(alice, room, "ban", user_id=bob.user_id))
    ok(act(bob, room, "forget"))


# -- kicking and banning ---------------------------------------------------------------------------------


def test_admin_kicks_a_member(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    ok(act(alice, room, "kick", user_id=bob.user_id, reason="calm down"))
    assert room not in joined_rooms(bob)
    assert member(alice, room, bob) == {"membership": "leave", "reason": "calm down"}
    assert bob.join(room) == room  # a kick is not a ban


def test_normal_member_cannot_kick_or_ban(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    carol.join(room)
    assert_error_with_message(act(bob, room, "kick", user_id=carol.user_id), 403, "M_FORBIDDEN")
    assert_error_with_message(act(bob, room, "ban", user_id=carol.user_id), 403, "M_FORBIDDEN")
    assert membership(alice, room, carol) == "join"


def test_moderator_cannot_kick_higher_power(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(room_version="10", preset="public_chat")
    alice.send_state(room, "m.room.power_levels", {"users": {alice.user_id: 100, bob.user_id: 50}})
    bob.join(room)
    assert_error_with_message(act(bob, room, "kick", user_id=alice.user_id), 403, "M_FORBIDDEN")
    assert_error_with_message(act(bob, room, "ban", user_id=alice.user_id), 403, "M_FORBIDDEN")


def test_moderator_kicks_lower_power(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = alice.create_room(preset="public_chat", power_level_content_override={"users": {bob.user_id: 50}})
    bob.join(room)
    carol.join(room)
    ok(act(bob, room, "kick", user_id=carol.user_id))
    assert room not in joined_rooms(carol)


def test_kick_of_non_member_is_refused(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    assert_error_with_message(act(alice, room, "kick", user_id=bob.user_id), 403, "M_FORBIDDEN")


def test_banned_user_cannot_join(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    ok(act(alice, room, "ban", user_id=bob.user_id, reason="spam"))
    assert room not in joined_rooms(bob)
    assert member(alice, room, bob) == {"membership": "ban", "reason": "spam"}
    assert_error_with_message(join(bob, room), 403, "M_FORBIDDEN")


def test_banned_user_cannot_be_invited(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room()
    ok(act(alice, room, "ban", user_id=bob.user_id))
    assert_error_with_message(act(alice, room, "invite", user_id=bob.user_id), 403, "M_FORBIDDEN")


def test_ban_before_joining(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    ok(act(alice, room, "ban", user_id=bob.user_id))
    assert_error_with_message(join(bob, room), 403, "M_FORBIDDEN")


def test_unban_lets_the_user_back(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    ok(act(alice, room, "ban", user_id=bob.user_id))
    ok(act(alice, room, "unban", user_id=bob.user_id))
    assert membership(alice, room, bob) == "leave"
    assert bob.join(room) == room


def test_unban_of_user_not_banned_is_refused(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    assert_error_with_message(act(alice, room, "unban", user_id=bob.user_id), 403, "M_FORBIDDEN")


def test_normal_member_cannot_unban(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    ok(act(alice, room, "ban", user_id=carol.user_id))
    assert_error_with_message(act(bob, room, "unban", user_id=carol.user_id), 403, "M_FORBIDDEN")


def test_ban_of_malformed_user_id_is_refused(alice: RoomClient) -> None:
    room = alice.create_room()
    assert_error_with_message(act(alice, room, "ban", user_id="not a user"), 400, "M_INVALID_PARAM")
    assert_error_with_message(act(alice, room, "kick", user_id="not a user"), 400, "M_INVALID_PARAM")
    assert_error_with_message(act(alice, room, "unban", user_id="not a user"), 400, "M_INVALID_PARAM")


# -- knocking --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["7", "10", "12"])
def test_knock_then_invite_then_join(alice: RoomClient, bob: RoomClient, version: str) -> None:
    room = knock_room(alice, version)
    assert ok(knock(bob, room, reason="let me in"))["room_id"] == room
    knocked = member(alice, room, bob)
    assert (knocked["membership"], knocked["reason"]) == ("knock", "let me in")
    assert room not in joined_rooms(bob)
    ok(act(alice, room, "invite", user_id=bob.user_id))
    assert membership(alice, room, bob) == "invite"
    assert bob.join(room) == room


def test_knock_by_alias(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    word = "k" + uuid.uuid4().hex[:10]
    room = alice.create_room(
        room_alias_name=word, initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "knock"}}]
    )
    assert ok(knock(bob, f"#{word}:{server.config['server_name']}"))["room_id"] == room


def test_knock_does_not_let_one_in(alice: RoomClient, bob: RoomClient) -> None:
    room = knock_room(alice)
    ok(knock(bob, room))
    assert_error_with_message(join(bob, room), 403, "M_FORBIDDEN")


def test_knocker_can_be_refused_by_kick(alice: RoomClient, bob: RoomClient) -> None:
    room = knock_room(alice)
    ok(knock(bob, room))
    ok(act(alice, room, "kick", user_id=bob.user_id))
    assert membership(alice, room, bob) == "leave"


def test_knocker_can_withdraw_by_leaving(alice: RoomClient, bob: RoomClient) -> None:
    room = knock_room(alice)
    ok(knock(bob, room))
    ok(act(bob, room, "leave"))
    assert membership(alice, room, bob) == "leave"


def test_knock_refused_before_room_version_7(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(room_version="6")
    assert_error_with_message(knock(bob, room), 403, "M_FORBIDDEN")


def test_knock_on_a_room_without_knock_join_rule_is_refused(alice: RoomClient, bob: RoomClient) -> None:
    assert_error_with_message(knock(bob, alice.create_room(preset="private_chat")), 403, "M_FORBIDDEN")
    assert_error_with_message(knock(bob, alice.create_room(preset="public_chat")), 403, "M_FORBIDDEN")


def test_knock_by_member_is_refused(alice: RoomClient) -> None:
    assert_error_with_message(knock(alice, knock_room(alice)), 403, "M_FORBIDDEN")


def test_knock_on_unknown_room_is_not_found(bob: RoomClient) -> None:
    assert_error_with_message(knock(bob, "!unknown:localhost"), 404, "M_NOT_FOUND")


def test_banned_user_cannot_knock(alice: RoomClient, bob: RoomClient) -> None:
    room = knock_room(alice)
    ok(act(alice, room, "ban", user_id=bob.user_id))
    assert_error_with_message(knock(bob, room), 403, "M_FORBIDDEN")


# -- joined_rooms ----------------------------------------------------------------------------------------


def test_joined_rooms_lists_only_joined(alice: RoomClient, bob: RoomClient) -> None:
    joined = alice.create_room(preset="public_chat")
    invited = alice.create_room(invite=[bob.user_id])
    left = alice.create_room(preset="public_chat")
    bob.join(joined)
    bob.join(left)
    bob.leave(left)
    rooms = joined_rooms(bob)
    assert joined in rooms
    assert invited not in rooms and left not in rooms


def test_joined_rooms_needs_a_token(anon: Client) -> None:
    assert_error_with_message(anon.get(f"{V3}/joined_rooms"), 401, "M_MISSING_TOKEN")

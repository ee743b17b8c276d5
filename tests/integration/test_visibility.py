"""History visibility as a client sees it through every read: /messages, /context, /event, /state,
/members."""

from pathlib import Path
from typing import Any

import pytest

from homeserver.core.requester import Requester
from homeserver.handlers.room_creation import CreateRoomRequest
from tests.client import RoomClient, error, ok, quote
from tests.inline import inline_server, resolve
from tests.integration.test_room_reads import paginate


def room_with_visibility(alice: RoomClient, visibility: str) -> str:
    return alice.create_room(
        preset="public_chat",
        initial_state=[{"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}],
    )


def visible_texts(client: RoomClient, room_id: str, **params: Any) -> list[str]:
    pages = paginate(client, room_id, "f", 10, **params)
    return [e["content"]["body"] for page in pages for e in page if e["type"] == "m.room.message"]


def can_see(client: RoomClient, room_id: str, event_id: str) -> bool:
    response = client.room_get(room_id, f"event/{quote(event_id)}")
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def test_shared_history_is_seen_by_a_later_joiner(alice: RoomClient, bob: RoomClient) -> None:
    room = room_with_visibility(alice, "shared")
    early = alice.send_text(room, "before bob")
    bob.join(room)
    alice.send_text(room, "after bob")
    assert visible_texts(bob, room) == ["before bob", "after bob"]
    assert can_see(bob, room, early)


def test_joined_history_is_hidden_from_a_later_joiner(alice: RoomClient, bob: RoomClient) -> None:
    room = room_with_visibility(alice, "joined")
    early = alice.send_text(room, "before bob")
    bob.join(room)
    alice.send_text(room, "after bob")
    assert visible_texts(bob, room) == ["after bob"]
    assert not can_see(bob, room, early)
    assert error(bob.room_get(room, f"context/{quote(early)}"), 404) == "M_NOT_FOUND"


def test_joined_history_still_shows_the_joiner_their_own_join(alice: RoomClient, bob: RoomClient) -> None:
    room = room_with_visibility(alice, "joined")
    alice.send_text(room, "before bob")
    bob.join(room)
    events = [e for page in paginate(bob, room, "b", 50) for e in page]
    assert events[0]["type"] == "m.room.member" and events[0]["state_key"] == bob.user_id
    assert "before bob" not in [e["content"].get("body") for e in events]


def test_events_before_any_visibility_setting_count_as_shared(alice: RoomClient, bob: RoomClient) -> None:
    room = room_with_visibility(alice, "joined")
    bob.join(room)
    events = [e for page in paginate(bob, room, "f", 50) for e in page]
    assert events[0]["type"] == "m.room.create"
    assert ("m.room.history_visibility", "") in {(e["type"], e.get("state_key")) for e in events}


def test_invited_history_is_seen_from_the_invite_on(alice: RoomClient, bob: RoomClient) -> None:
    room = room_with_visibility(alice, "invited")
    alice.send_text(room, "before the invite")
    alice.invite(room, bob.user_id)
    alice.send_text(room, "while invited")
    bob.join(room)
    alice.send_text(room, "after joining")
    assert visible_texts(bob, room) == ["while invited", "after joining"]


def test_world_readable_room_is_readable_by_a_non_member(alice: RoomClient, bob: RoomClient) -> None:
    room = room_with_visibility(alice, "world_readable")
    event_id = alice.send_text(room, "for everyone")
    assert visible_texts(bob, room) == ["for everyone"]
    assert can_see(bob, room, event_id)
    assert ok(bob.room_get(room, "state/m.room.history_visibility")) == {"history_visibility": "world_readable"}
    assert {e["state_key"] for e in ok(bob.room_get(room, "members"))["chunk"]} == {alice.user_id}
    assert ok(bob.room_get(room, f"context/{quote(event_id)}"))["event"]["event_id"] == event_id


@pytest.mark.parametrize("visibility", ["shared", "invited", "joined"])
def test_non_member_is_refused(alice: RoomClient, bob: RoomClient, visibility: str) -> None:
    room = room_with_visibility(alice, visibility)
    event_id = alice.send_text(room, "members only")
    assert error(bob.room_get(room, "messages", dir="b"), 403) == "M_FORBIDDEN"
    assert error(bob.room_get(room, "state"), 403) == "M_FORBIDDEN"
    assert error(bob.room_get(room, "state/m.room.name"), 403) == "M_FORBIDDEN"
    assert error(bob.room_get(room, "members"), 403) == "M_FORBIDDEN"
    assert error(bob.room_get(room, f"context/{quote(event_id)}"), 403) == "M_FORBIDDEN"
    assert error(bob.room_get(room, f"event/{quote(event_id)}"), 404) == "M_NOT_FOUND"


def test_unknown_room_is_refused_like_a_private_one(bob: RoomClient) -> None:
    assert error(bob.room_get("!nowhere:localhost", "messages", dir="b"), 403) == "M_FORBIDDEN"
    assert error(bob.room_get("!nowhere:localhost", "state"), 403) == "M_FORBIDDEN"


def test_invitee_cannot_read_a_shared_room_before_joining(alice: RoomClient, bob: RoomClient) -> None:
    room = room_with_visibility(alice, "shared")
    event_id = alice.send_text(room, "not yet")
    alice.invite(room, bob.user_id)
    assert error(bob.room_get(room, "messages", dir="b"), 403) == "M_FORBIDDEN"
    assert not can_see(bob, room, event_id)


def test_user_who_left_does_not_see_messages_sent_after(alice: RoomClient, bob: RoomClient) -> None:
    room = room_with_visibility(alice, "joined")
    bob.join(room)
    while_in = alice.send_text(room, "while bob is here")
    bob.leave(room)
    after = alice.send_text(room, "after bob left")
    assert visible_texts(bob, room) == ["while bob is here"]
    backwards = [e for page in paginate(bob, room, "b", 3) for e in page]
    assert after not in {e["event_id"] for e in backwards}
    assert can_see(bob, room, while_in)
    assert not can_see(bob, room, after)
    context = ok(bob.room_get(room, f"context/{quote(while_in)}"))
    assert [e["type"] for e in context["events_after"]] == ["m.room.member"]  # his own leave, nothing later


def test_user_who_left_sees_the_state_as_it_was_when_they_left(alice: RoomClient, bob: RoomClient) -> None:
    room = public_room_named(alice, "Old name")
    bob.join(room)
    bob.leave(room)
    alice.send_state(room, "m.room.name", {"name": "New name"})
    assert ok(bob.room_get(room, "state/m.room.name")) == {"name": "Old name"}
    names = [e["content"] for e in ok(bob.room_get(room, "state")) if e["type"] == "m.room.name"]
    assert names == [{"name": "Old name"}]
    assert ok(alice.room_get(room, "state/m.room.name")) == {"name": "New name"}


def test_user_who_left_sees_the_members_as_they_were_when_they_left(
    alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = public_room_named(alice, "Room")
    bob.join(room)
    bob.leave(room)
    carol.join(room)
    members = {e["state_key"]: e["content"]["membership"] for e in ok(bob.room_get(room, "members"))["chunk"]}
    assert members == {alice.user_id: "join", bob.user_id: "leave"}


def test_later_joiner_sees_the_change_that_hid_history_from_them(alice: RoomClient, bob: RoomClient) -> None:
    room = room_with_visibility(alice, "shared")
    alice.send_text(room, "shared with future members")
    change = alice.send_state(room, "m.room.history_visibility", {"history_visibility": "joined"})
    alice.send_text(room, "only for members at the time")
    bob.join(room)
    assert visible_texts(bob, room) == ["shared with future members"]
    assert can_see(bob, room, change)


def public_room_named(alice: RoomClient, name: str) -> str:
    return alice.create_room(preset="public_chat", name=name)


# -- cost -----------------------------------------------------------------------------------


def test_a_page_of_a_busy_room_reads_two_state_entries_per_state_group(
    database_section: dict[str, Any], tmp_path: Path
) -> None:
    owner = Requester("@owner:localhost", "DEV")
    seeding = inline_server(database_section, tmp_path)
    room_id, _ = resolve(seeding.room_creation.create_room(owner, CreateRoomRequest(preset="public_chat")))
    for n in range(150):  # every join is a new state group, and the room's state keeps growing
        member = Requester(f"@member{n}:localhost", "DEV")
        resolve(seeding.membership.join(member, room_id))
        resolve(seeding.messages.send(member, room_id, "m.room.message", {"msgtype": "m.text", "body": "hi"}, "t"))
    seeding.db.close()

    hs = inline_server(database_section, tmp_path)  # a fresh process: empty caches
    page = resolve(
        hs.room_reads.messages(
            owner, room_id, from_token=None, to_token=None, backwards=True, limit=50, event_filter=None
        )
    )
    assert len(page["chunk"]) == 50
    # History visibility and the reader's membership at each of the ~25 groups: never a whole state.
    assert hs.state.rows_read <= 2 * 50
    assert hs.events.events_loaded <= 50 + 3
    hs.db.close()

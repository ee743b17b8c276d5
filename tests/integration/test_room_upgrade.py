"""Room upgrades through HTTP on both backends: the replacement room, the tombstone, what moves."""

import uuid
from typing import Any

from tests.client import RoomClient, assert_error, ok, quote
from tests.server import ServerProcess


def upgrade(client: RoomClient, room_id: str, body: Any) -> Any:
    return client.post(f"/_matrix/client/v3/rooms/{quote(room_id)}/upgrade", body)


def state(client: RoomClient, room_id: str, event_type: str) -> dict[str, Any]:
    return ok(client.room_get(room_id, f"state/{event_type}/"))


def state_events(client: RoomClient, room_id: str) -> dict[str, dict[str, Any]]:
    return {e["type"]: e for e in ok(client.room_get(room_id, "state")) if e["state_key"] == ""}


def last_event_id(client: RoomClient, room_id: str) -> str:
    return ok(client.room_get(room_id, "messages", dir="b", limit=1))["chunk"][0]["event_id"]


def test_an_upgraded_room_points_both_ways(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    localpart = f"up{uuid.uuid4().hex[:10]}"
    room = alice.create_room(
        preset="public_chat",
        visibility="public",
        name="Old name",
        topic="Old topic",
        room_alias_name=localpart,
        room_version="11",
        initial_state=[{"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
    )
    alias = f"#{localpart}:{server.config['server_name']}"
    bob.join(room)
    levels = state(alice, room, "m.room.power_levels")
    levels["users"][bob.user_id] = 10
    alice.send_state(room, "m.room.power_levels", levels)
    alice.send_text(room, "before the upgrade")
    last = last_event_id(alice, room)

    new_room = ok(upgrade(alice, room, {"new_version": "12"}))["replacement_room"]

    create = state(alice, new_room, "m.room.create")
    assert create["room_version"] == "12"
    assert create["predecessor"] == {"room_id": room, "event_id": last}
    assert "type" not in create
    tombstone = state(alice, room, "m.room.tombstone")
    assert tombstone["replacement_room"] == new_room and tombstone["body"]
    copied = state_events(alice, new_room)
    assert copied["m.room.name"]["content"]["name"] == "Old name"
    assert copied["m.room.topic"]["content"]["topic"] == "Old topic"
    assert copied["m.room.join_rules"]["content"]["join_rule"] == "public"
    assert copied["m.room.encryption"]["content"]["algorithm"] == "m.megolm.v1.aes-sha2"
    assert copied["m.room.canonical_alias"]["content"]["alias"] == alias
    new_levels = copied["m.room.power_levels"]["content"]
    # v12: alice is the new room's creator, so above every level and not listed; bob keeps his.
    assert new_levels["users"] == {bob.user_id: 10}
    assert ok(alice.get(f"/_matrix/client/v3/directory/room/{quote(alias)}"))["room_id"] == new_room
    assert ok(alice.get(f"/_matrix/client/v3/directory/list/room/{quote(new_room)}"))["visibility"] == "public"
    assert ok(alice.room_get(room, "aliases"))["aliases"] == []
    assert ok(alice.room_get(new_room, "aliases"))["aliases"] == [alias]
    assert "alias" not in state(alice, room, "m.room.canonical_alias")

    old_levels = state(alice, room, "m.room.power_levels")
    assert old_levels["events_default"] >= 50 and old_levels["invite"] >= 50
    path = f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/{uuid.uuid4().hex}"
    assert_error(bob.put(path, {"msgtype": "m.text", "body": "still here?"}), 403, "M_FORBIDDEN")
    bob.join(new_room)
    bob.send_text(new_room, "moved over")


def test_upgrade_keeps_the_space_type_and_the_upgraders_power(alice: RoomClient) -> None:
    room = alice.create_room(room_version="12", creation_content={"type": "m.space"}, name="A space")
    new_room = ok(upgrade(alice, room, {"new_version": "11"}))["replacement_room"]
    create = state(alice, new_room, "m.room.create")
    assert create["type"] == "m.space" and create["predecessor"]["room_id"] == room
    levels = state(alice, new_room, "m.room.power_levels")
    # Alice's unlimited power as a v12 creator becomes the top level of a v11 room.
    assert levels["users"][alice.user_id] >= 150
    alice.send_state(new_room, "m.room.name", {"name": "Renamed"})


def test_additional_creators_are_only_those_asked_for(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    new_room = ok(upgrade(alice, room, {"new_version": "12", "additional_creators": [bob.user_id]}))
    create = state(alice, new_room["replacement_room"], "m.room.create")
    assert create["additional_creators"] == [bob.user_id]


def test_upgrade_errors(server: ServerProcess, alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    assert_error(upgrade(alice, room, {"new_version": "999"}), 400, "M_UNSUPPORTED_ROOM_VERSION")
    assert_error(upgrade(alice, room, {}), 400, "M_MISSING_PARAM")
    assert_error(upgrade(alice, room, {"new_version": 12}), 400, "M_INVALID_PARAM")
    assert_error(upgrade(bob, room, {"new_version": "12"}), 403, "M_FORBIDDEN")
    assert_error(upgrade(carol, room, {"new_version": "12"}), 403, "M_FORBIDDEN")
    unknown = f"!nowhere{uuid.uuid4().hex[:8]}:{server.config['server_name']}"
    assert_error(upgrade(alice, unknown, {"new_version": "12"}), 404, "M_NOT_FOUND")
    assert_error(alice.room_get(room, "state/m.room.tombstone/"), 404, "M_NOT_FOUND")

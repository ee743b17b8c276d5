"""The space hierarchy through HTTP on both backends: depth-first order, paging, filters, access."""

import uuid
from typing import Any

from tests.client import RoomClient, assert_error, ok, quote
from tests.server import ServerProcess


def hierarchy(client: RoomClient, room_id: str, **params: Any) -> Any:
    return client.get(f"/_matrix/client/v1/rooms/{quote(room_id)}/hierarchy", params=params)


def add_child(client: RoomClient, server: ServerProcess, parent: str, child: str, **content: Any) -> None:
    client.send_state(parent, "m.space.child", {"via": [server.config["server_name"]], **content}, child)


def all_pages(client: RoomClient, room_id: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    rooms: list[dict[str, Any]] = []
    pages = 0
    token = None
    while True:
        page = ok(hierarchy(client, room_id, **params, **({"from": token} if token else {})))
        rooms.extend(page["rooms"])
        pages += 1
        token = page.get("next_batch")
        if token is None:
            return rooms, pages


def three_levels(alice: RoomClient, server: ServerProcess) -> dict[str, str]:
    """root (space) -> [sub (space) -> [leaf], side]; plus a private room only alice may see."""
    space = {"type": "m.space"}
    rooms = {
        "root": alice.create_room(preset="public_chat", name="Root", creation_content=space),
        "sub": alice.create_room(preset="public_chat", name="Sub", topic="Below root", creation_content=space),
        "leaf": alice.create_room(preset="public_chat", name="Leaf"),
        "side": alice.create_room(preset="public_chat", name="Side"),
        "secret": alice.create_room(preset="private_chat", name="Secret"),
    }
    add_child(alice, server, rooms["root"], rooms["side"], order="b")
    add_child(alice, server, rooms["root"], rooms["sub"], order="a", suggested=True)
    add_child(alice, server, rooms["root"], rooms["secret"], order="c")
    add_child(alice, server, rooms["sub"], rooms["leaf"], suggested=True)
    add_child(alice, server, rooms["leaf"], rooms["root"])  # a cycle is walked once
    return rooms


def test_a_space_hierarchy_of_three_levels_paginates(
    server: ServerProcess, alice: RoomClient, bob: RoomClient
) -> None:
    rooms = three_levels(alice, server)
    found, pages = all_pages(bob, rooms["root"], limit=1)
    assert [r["room_id"] for r in found] == [rooms[n] for n in ("root", "sub", "leaf", "side")]
    assert pages == 4
    root, sub = found[0], found[1]
    assert root["name"] == "Root" and root["room_type"] == "m.space" and root["join_rule"] == "public"
    assert root["num_joined_members"] == 1 and root["world_readable"] is False and root["guest_can_join"] is False
    assert sub["topic"] == "Below root" and sub["room_type"] == "m.space"
    assert "room_type" not in found[2]
    children = root["children_state"]
    assert [c["state_key"] for c in children] == [rooms["sub"], rooms["side"], rooms["secret"]]
    assert all(c["type"] == "m.space.child" and isinstance(c["origin_server_ts"], int) for c in children)
    assert children[0]["content"]["suggested"] is True and children[0]["sender"] == alice.user_id
    assert found[3]["children_state"] == []

    everything, _ = all_pages(alice, rooms["root"], limit=2)
    assert [r["room_id"] for r in everything] == [rooms[n] for n in ("root", "sub", "leaf", "side", "secret")]
    shallow, _ = all_pages(alice, rooms["root"], max_depth=1)
    assert [r["room_id"] for r in shallow] == [rooms[n] for n in ("root", "sub", "side", "secret")]
    only_root, _ = all_pages(alice, rooms["root"], max_depth=0)
    assert [r["room_id"] for r in only_root] == [rooms["root"]]
    suggested, _ = all_pages(alice, rooms["root"], suggested_only="true")
    assert [r["room_id"] for r in suggested] == [rooms[n] for n in ("root", "sub", "leaf")]


def test_removed_child_leaves_the_hierarchy(server: ServerProcess, alice: RoomClient) -> None:
    rooms = three_levels(alice, server)
    alice.send_state(rooms["root"], "m.space.child", {}, rooms["side"])
    found, _ = all_pages(alice, rooms["root"], max_depth=1)
    assert rooms["side"] not in {r["room_id"] for r in found}


def test_hierarchy_errors(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    rooms = three_levels(alice, server)
    assert_error(hierarchy(bob, rooms["secret"]), 403, "M_FORBIDDEN")
    unknown = f"!nowhere{uuid.uuid4().hex[:8]}:{server.config['server_name']}"
    assert_error(hierarchy(alice, unknown), 403, "M_FORBIDDEN")
    assert_error(hierarchy(alice, rooms["root"], **{"from": "not-a-token"}), 400, "M_INVALID_PARAM")
    token = ok(hierarchy(alice, rooms["root"], limit=1))["next_batch"]
    assert_error(hierarchy(alice, rooms["root"], limit=1, max_depth=1, **{"from": token}), 400, "M_INVALID_PARAM")
    assert_error(hierarchy(alice, rooms["sub"], **{"from": token}), 400, "M_INVALID_PARAM")
    assert_error(hierarchy(alice, rooms["root"], limit=0), 400, "M_INVALID_PARAM")
    assert_error(hierarchy(alice, rooms["root"], max_depth=-1), 400, "M_INVALID_PARAM")
    assert_error(hierarchy(alice, rooms["root"], suggested_only="maybe"), 400, "M_INVALID_PARAM")


def test_restricted_rooms_show_to_members_of_the_allowed_rooms(
    server: ServerProcess, alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    rooms = three_levels(alice, server)
    allow = [{"type": "m.room_membership", "room_id": rooms["root"]}]
    rules = {"type": "m.room.join_rules", "content": {"join_rule": "restricted", "allow": allow}}
    restricted = alice.create_room(name="Members only", initial_state=[rules])
    add_child(alice, server, rooms["root"], restricted, order="d")
    bob.join(rooms["root"])
    seen_by_bob, _ = all_pages(bob, rooms["root"], max_depth=1)
    assert seen_by_bob[-1]["room_id"] == restricted
    assert seen_by_bob[-1]["join_rule"] == "restricted" and seen_by_bob[-1]["allowed_room_ids"] == [rooms["root"]]
    seen_by_carol, _ = all_pages(carol, rooms["root"], max_depth=1)
    assert restricted not in {r["room_id"] for r in seen_by_carol}

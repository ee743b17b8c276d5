"""Receipts and read markers over HTTP, read back through the store's functions sync uses (in this
process, on the running server's own database)."""

from collections.abc import Iterator
from typing import Any

import pytest

from homeserver.config.options import DatabaseConfig
from homeserver.storage.account_data import AccountDataStore
from homeserver.storage.database import Database
from homeserver.storage.engines import create_engine
from homeserver.storage.receipts import ReceiptStore
from tests.client import RoomClient, error, ok, quote
from tests.inline import resolve
from tests.server import ServerProcess


@pytest.fixture(scope="module")
def database(server: ServerProcess) -> Iterator[Database]:
    section = server.config["database"]
    db = Database(create_engine(DatabaseConfig(name=section["name"], args=section["args"])), 1, 1)
    yield db
    db.close()


@pytest.fixture(scope="module")
def store(database: Database) -> ReceiptStore:
    return ReceiptStore(database)


def post_receipt(client: RoomClient, room_id: str, event_id: str, kind: str = "m.read", body: Any = None) -> Any:
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/receipt/{quote(kind)}/{quote(event_id)}"
    return client.post(path, body)


def read_markers(client: RoomClient, room_id: str, body: Any) -> Any:
    return client.post(f"/_matrix/client/v3/rooms/{quote(room_id)}/read_markers", body)


def fully_read(client: RoomClient, room_id: str) -> Any:
    return client.get(
        f"/_matrix/client/v3/user/{quote(client.user_id or '')}/rooms/{quote(room_id)}/account_data/m.fully_read"
    )


def shared_room(alice: RoomClient, bob: RoomClient, messages: int = 3) -> tuple[str, list[str]]:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    return room, [alice.send_text(room, f"message {i}") for i in range(messages)]


def receipts(store: ReceiptStore, room_id: str, viewer: RoomClient, after: int | None = None) -> dict[str, Any]:
    upto = resolve(store.current_position())
    return resolve(store.receipts_for_rooms([room_id], after, upto, viewer.user_id or "")).get(room_id, {})


# -- receipts -----------------------------------------------------------------------------------


def test_read_receipt_with_an_empty_body_is_shown_to_the_room(
    alice: RoomClient, bob: RoomClient, store: ReceiptStore
) -> None:
    room, (_, _, last) = shared_room(alice, bob)
    assert ok(post_receipt(bob, room, last)) == {}  # no body at all
    content = receipts(store, room, alice)
    assert list(content) == [last]
    assert list(content[last]["m.read"]) == [bob.user_id]
    data = content[last]["m.read"][bob.user_id]
    assert isinstance(data["ts"], int) and "thread_id" not in data


def test_a_later_receipt_replaces_the_earlier_one(alice: RoomClient, bob: RoomClient, store: ReceiptStore) -> None:
    room, (first, _, last) = shared_room(alice, bob)
    ok(post_receipt(bob, room, first, body={}))
    ok(post_receipt(bob, room, last, body={}))
    assert list(receipts(store, room, bob)) == [last]


def test_a_receipt_for_an_earlier_event_is_accepted_and_ignored(
    alice: RoomClient, bob: RoomClient, store: ReceiptStore
) -> None:
    room, (first, _, last) = shared_room(alice, bob)
    ok(post_receipt(bob, room, last, body={}))
    ok(post_receipt(bob, room, first, body={}))
    assert list(receipts(store, room, bob)) == [last]


def test_receipts_are_kept_per_user_type_and_thread(
    alice: RoomClient, bob: RoomClient, carol: RoomClient, store: ReceiptStore
) -> None:
    room, (root, main, in_thread, last) = shared_room(alice, bob, messages=4)
    carol.join(room)
    ok(post_receipt(bob, room, root, body={}))  # unthreaded
    ok(post_receipt(bob, room, main, body={"thread_id": "main"}))
    ok(post_receipt(bob, room, in_thread, body={"thread_id": root}))
    ok(post_receipt(carol, room, root, body={}))
    content = receipts(store, room, alice)
    assert set(content[root]["m.read"]) == {bob.user_id, carol.user_id}
    assert "thread_id" not in content[root]["m.read"][bob.user_id]
    assert content[main]["m.read"][bob.user_id]["thread_id"] == "main"
    assert content[in_thread]["m.read"][bob.user_id]["thread_id"] == root
    ok(post_receipt(bob, room, last, body={"thread_id": "main"}))  # moves the main-thread one only
    content = receipts(store, room, alice)
    assert set(content) == {root, in_thread, last}
    assert content[last]["m.read"][bob.user_id]["thread_id"] == "main"
    assert set(content[root]["m.read"]) == {bob.user_id, carol.user_id}


def test_private_receipt_is_shown_to_its_owner_only(alice: RoomClient, bob: RoomClient, store: ReceiptStore) -> None:
    room, (_, _, last) = shared_room(alice, bob)
    ok(post_receipt(bob, room, last, "m.read.private", {}))
    assert receipts(store, room, alice) == {}
    assert list(receipts(store, room, bob)[last]["m.read.private"]) == [bob.user_id]


def test_receipts_are_read_by_range_of_positions(alice: RoomClient, bob: RoomClient, store: ReceiptStore) -> None:
    room, (first, _, last) = shared_room(alice, bob)
    ok(post_receipt(alice, room, first, body={}))
    between = resolve(store.current_position())
    ok(post_receipt(bob, room, last, body={}))
    assert list(receipts(store, room, alice, after=between)) == [last]
    assert set(receipts(store, room, alice)) == {first, last}
    assert receipts(store, room, alice, after=resolve(store.current_position())) == {}
    assert resolve(store.receipts_for_rooms([room], None, between, alice.user_id or ""))[room].keys() == {first}


def test_read_position_is_the_furthest_public_or_private_receipt(
    alice: RoomClient, bob: RoomClient, store: ReceiptStore
) -> None:
    room, (first, second, last) = shared_room(alice, bob)
    assert resolve(store.read_position(bob.user_id or "", room)) is None
    ok(post_receipt(bob, room, second, "m.read.private", {}))
    ok(post_receipt(bob, room, first, body={}))
    assert resolve(store.read_position(bob.user_id or "", room)) == second
    ok(post_receipt(bob, room, last, body={"thread_id": "main"}))
    assert resolve(store.read_position(bob.user_id or "", room)) == last


def test_receipt_errors(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room, (first, _, _) = shared_room(alice, bob)
    other_room = alice.create_room()
    elsewhere = alice.send_text(other_room, "elsewhere")
    assert error(post_receipt(bob, room, first, "m.unknown", {}), 400) == "M_INVALID_PARAM"
    assert error(post_receipt(bob, room, "$nope", body={}), 404) == "M_NOT_FOUND"
    assert error(post_receipt(bob, room, elsewhere, body={}), 404) == "M_NOT_FOUND"
    assert error(post_receipt(carol, room, first, body={}), 403) == "M_FORBIDDEN"
    assert error(post_receipt(carol, "!unknown:localhost", first, body={}), 403) == "M_FORBIDDEN"
    for thread_id in ("", "thread", 5):
        assert error(post_receipt(bob, room, first, body={"thread_id": thread_id}), 400) == "M_INVALID_PARAM"
    assert error(post_receipt(bob, room, first, "m.fully_read", {"thread_id": "main"}), 400) == "M_INVALID_PARAM"
    assert error(post_receipt(bob, room, first, body=[]), 400) == "M_BAD_JSON"
    path = f"/_matrix/client/v3/rooms/{quote(room)}/receipt/m.read/{quote(first)}"
    assert error(bob.post(path, {}, token=False), 401) == "M_MISSING_TOKEN"


def test_no_receipt_for_an_event_hidden_by_history_visibility(alice: RoomClient, bob: RoomClient) -> None:
    visibility = {"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}
    room = alice.create_room(preset="public_chat", initial_state=[visibility])
    before = alice.send_text(room, "before bob joined")
    bob.join(room)
    after = alice.send_text(room, "after bob joined")
    assert error(post_receipt(bob, room, before, body={}), 404) == "M_NOT_FOUND"
    assert error(read_markers(bob, room, {"m.fully_read": before}), 404) == "M_NOT_FOUND"
    ok(post_receipt(bob, room, after, body={}))


def test_fully_read_receipt_sets_the_read_marker_not_a_receipt(
    alice: RoomClient, bob: RoomClient, store: ReceiptStore
) -> None:
    room, (first, _, _) = shared_room(alice, bob)
    assert error(fully_read(bob, room), 404) == "M_NOT_FOUND"
    ok(post_receipt(bob, room, first, "m.fully_read", {}))
    assert ok(fully_read(bob, room)) == {"event_id": first}
    assert receipts(store, room, bob) == {}


# -- read markers -------------------------------------------------------------------------------


def test_read_markers_set_the_marker_and_both_receipts(alice: RoomClient, bob: RoomClient, store: ReceiptStore) -> None:
    room, (first, second, last) = shared_room(alice, bob)
    ok(read_markers(bob, room, {"m.fully_read": first, "m.read": second, "m.read.private": last}))
    assert ok(fully_read(bob, room)) == {"event_id": first}
    mine = receipts(store, room, bob)
    assert list(mine[second]["m.read"]) == [bob.user_id]
    assert list(mine[last]["m.read.private"]) == [bob.user_id]
    assert receipts(store, room, alice).keys() == {second}


def test_read_marker_may_move_back(alice: RoomClient, bob: RoomClient) -> None:
    room, (first, _, last) = shared_room(alice, bob)
    ok(read_markers(bob, room, {"m.fully_read": last}))
    ok(read_markers(bob, room, {"m.fully_read": first}))
    assert ok(fully_read(bob, room)) == {"event_id": first}


def test_read_markers_with_nothing_to_set_or_unknown_keys_succeed(alice: RoomClient, bob: RoomClient) -> None:
    room, _ = shared_room(alice, bob)
    assert ok(read_markers(bob, room, {})) == {}
    assert ok(read_markers(bob, room, {"m.something.else": "$x"})) == {}


def test_read_markers_errors_write_nothing(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room, (first, _, _) = shared_room(alice, bob)
    assert error(read_markers(carol, room, {"m.fully_read": first}), 403) == "M_FORBIDDEN"
    assert error(read_markers(bob, room, {"m.fully_read": first, "m.read": "$unknown"}), 404) == "M_NOT_FOUND"
    assert error(fully_read(bob, room), 404) == "M_NOT_FOUND"
    assert error(read_markers(bob, room, {"m.read": 5}), 400) == "M_INVALID_PARAM"
    assert error(read_markers(bob, room, None), 400) == "M_NOT_JSON"


def test_fully_read_cannot_be_set_as_account_data(alice: RoomClient, bob: RoomClient, database: Database) -> None:
    room, (first, _, _) = shared_room(alice, bob)
    path = f"/_matrix/client/v3/user/{quote(bob.user_id or '')}/rooms/{quote(room)}/account_data/m.fully_read"
    assert error(bob.put(path, {"event_id": first}), 405) == "M_BAD_JSON"
    ok(read_markers(bob, room, {"m.fully_read": first}))
    changed = resolve(AccountDataStore(database).room_account_data(bob.user_id or "", None, 1 << 62))
    assert changed == {room: {"m.fully_read": {"event_id": first}}}

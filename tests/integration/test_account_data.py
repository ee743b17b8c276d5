"""Account data over HTTP, global and per room, and the changes sync reads back through the store
(in this process, on the running server's own database)."""

from collections.abc import Iterator

import pytest

from homeserver.config.options import DatabaseConfig
from homeserver.storage.account_data import AccountDataStore
from homeserver.storage.database import Database
from homeserver.storage.engines import create_engine
from tests.client import RoomClient, error, ok, quote
from tests.inline import resolve
from tests.server import ServerProcess


@pytest.fixture(scope="module")
def store(server: ServerProcess) -> Iterator[AccountDataStore]:
    section = server.config["database"]
    db = Database(create_engine(DatabaseConfig(name=section["name"], args=section["args"])), 1, 1)
    yield AccountDataStore(db)
    db.close()


def global_path(user_id: str | None, data_type: str) -> str:
    return f"/_matrix/client/v3/user/{quote(user_id or '')}/account_data/{quote(data_type)}"


def room_path(user_id: str | None, room_id: str, data_type: str) -> str:
    return f"/_matrix/client/v3/user/{quote(user_id or '')}/rooms/{quote(room_id)}/account_data/{quote(data_type)}"


# -- global -------------------------------------------------------------------------------------


def test_global_account_data_round_trip_and_overwrite(alice: RoomClient) -> None:
    path = global_path(alice.user_id, "org.example.config")
    assert ok(alice.put(path, {"theme": "dark", "nested": {"list": [1, "two", None]}})) == {}
    assert ok(alice.get(path)) == {"theme": "dark", "nested": {"list": [1, "two", None]}}
    ok(alice.put(path, {"theme": "light"}))
    assert ok(alice.get(path)) == {"theme": "light"}


def test_unset_account_data_is_not_found(alice: RoomClient) -> None:
    assert error(alice.get(global_path(alice.user_id, "org.example.never")), 404) == "M_NOT_FOUND"


def test_account_data_of_another_user_is_forbidden(alice: RoomClient, bob: RoomClient) -> None:
    path = global_path(alice.user_id, "org.example.config")
    ok(alice.put(path, {"secret": True}))
    assert error(bob.get(path), 403) == "M_FORBIDDEN"
    assert error(bob.put(path, {"secret": False}), 403) == "M_FORBIDDEN"
    assert ok(alice.get(path)) == {"secret": True}


@pytest.mark.parametrize("data_type", ["m.fully_read", "m.push_rules"])
def test_server_managed_types_cannot_be_set(alice: RoomClient, data_type: str) -> None:
    room = alice.create_room()
    assert error(alice.put(global_path(alice.user_id, data_type), {}), 405) == "M_BAD_JSON"
    assert error(alice.put(room_path(alice.user_id, room, data_type), {}), 405) == "M_BAD_JSON"


def test_content_must_be_a_json_object(alice: RoomClient) -> None:
    path = global_path(alice.user_id, "org.example.config")
    assert error(alice.put(path, ["not", "an", "object"]), 400) == "M_BAD_JSON"
    assert error(alice.put(path, data=b"{nope", headers={"Content-Type": "application/json"}), 400) == "M_NOT_JSON"


def test_account_data_needs_an_access_token(alice: RoomClient) -> None:
    path = global_path(alice.user_id, "org.example.config")
    assert error(alice.get(path, token=False), 401) == "M_MISSING_TOKEN"
    assert error(alice.put(path, {}, token=False), 401) == "M_MISSING_TOKEN"


# -- per room -----------------------------------------------------------------------------------


def test_room_account_data_round_trip_apart_from_global_and_other_rooms(alice: RoomClient) -> None:
    room, other = alice.create_room(), alice.create_room()
    ok(alice.put(room_path(alice.user_id, room, "m.tag"), {"tags": {"u.work": {"order": 0.5}}}))
    assert ok(alice.get(room_path(alice.user_id, room, "m.tag"))) == {"tags": {"u.work": {"order": 0.5}}}
    assert error(alice.get(room_path(alice.user_id, other, "m.tag")), 404) == "M_NOT_FOUND"
    assert error(alice.get(global_path(alice.user_id, "m.tag")), 404) == "M_NOT_FOUND"
    ok(alice.put(global_path(alice.user_id, "org.example.both"), {"where": "global"}))
    assert error(alice.get(room_path(alice.user_id, room, "org.example.both")), 404) == "M_NOT_FOUND"


def test_room_account_data_errors(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room()
    ok(alice.put(room_path(alice.user_id, room, "org.example.x"), {"a": 1}))
    assert error(bob.get(room_path(alice.user_id, room, "org.example.x")), 403) == "M_FORBIDDEN"
    assert error(bob.put(room_path(alice.user_id, room, "org.example.x"), {}), 403) == "M_FORBIDDEN"
    assert error(alice.put(room_path(alice.user_id, "@notaroom:localhost", "org.example.x"), {}), 400) == (
        "M_INVALID_PARAM"
    )
    assert error(alice.get(room_path(alice.user_id, "not-a-room", "org.example.x")), 400) == "M_INVALID_PARAM"


# -- what sync reads ----------------------------------------------------------------------------


def test_changes_are_read_by_range_of_positions(alice: RoomClient, store: AccountDataStore) -> None:
    user = alice.user_id or ""
    room = alice.create_room()
    ok(alice.put(global_path(user, "org.example.a"), {"n": 1}))
    ok(alice.put(room_path(user, room, "org.example.r"), {"n": 1}))
    between = resolve(store.current_position())
    ok(alice.put(global_path(user, "org.example.b"), {"n": 2}))
    ok(alice.put(global_path(user, "org.example.a"), {"n": 3}))
    now = resolve(store.current_position())
    assert now >= between + 2
    assert resolve(store.global_account_data(user, None, now)) == {"org.example.a": {"n": 3}, "org.example.b": {"n": 2}}
    assert resolve(store.global_account_data(user, between, now)) == {
        "org.example.a": {"n": 3},
        "org.example.b": {"n": 2},
    }
    assert resolve(store.global_account_data(user, now, now)) == {}
    assert resolve(store.room_account_data(user, None, now)) == {room: {"org.example.r": {"n": 1}}}
    assert resolve(store.room_account_data(user, between, now)) == {}
    ok(alice.put(room_path(user, room, "org.example.r"), {"n": 4}))
    later = resolve(store.current_position())
    assert resolve(store.room_account_data(user, now, later)) == {room: {"org.example.r": {"n": 4}}}
    assert resolve(store.global_account_data(user, now, later)) == {}


def test_each_user_reads_only_their_own_changes(alice: RoomClient, bob: RoomClient, store: AccountDataStore) -> None:
    ok(alice.put(global_path(alice.user_id, "org.example.mine"), {"owner": "alice"}))
    now = resolve(store.current_position())
    assert "org.example.mine" not in resolve(store.global_account_data(bob.user_id or "", None, now))

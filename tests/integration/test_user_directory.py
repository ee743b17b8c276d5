"""The user directory (POST /user_directory/search), through HTTP on both backends."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.client import PASSWORD, Client, RoomClient, assert_error, new_room_user, ok, quote
from tests.integration.servers import extra_server
from tests.server import ServerProcess

SEARCH = "/_matrix/client/v3/user_directory/search"


def search(user: Client, term: str, **body: Any) -> dict[str, Any]:
    return ok(user.post(SEARCH, {"search_term": term, **body}))


def found(user: Client, term: str) -> list[str]:
    return [result["user_id"] for result in search(user, term)["results"]]


def word() -> str:
    """A word no other test's user has in its name, so one server serves every test."""
    return "w" + uuid.uuid4().hex[:10]


def named_user(server: ServerProcess, localpart: str) -> RoomClient:
    return new_room_user(server.url, localpart)


def set_display_name(user: Client, name: str) -> None:
    ok(user.put(f"/_matrix/client/v3/profile/{quote(user.user_id)}/displayname", {"displayname": name}))


def shared_private_room(owner: RoomClient, *others: RoomClient) -> str:
    room = owner.create_room(preset="private_chat")
    for other in others:
        owner.invite(room, other.user_id)
        other.join(room)
    return room


def test_finds_by_localpart_and_display_name_ignoring_case(server: ServerProcess, alice: RoomClient) -> None:
    localpart, name = word(), word()
    bob = named_user(server, localpart)
    set_display_name(bob, f"Bob {name.upper()}")
    shared_private_room(alice, bob)
    assert found(alice, localpart.upper()) == [bob.user_id]
    assert found(alice, name) == [bob.user_id]
    results = search(alice, name)["results"]
    assert results == [{"user_id": bob.user_id, "display_name": f"Bob {name.upper()}"}]
    assert found(alice, bob.user_id) == [bob.user_id]  # a whole user id, as clients paste it
    assert bob.user_id not in found(alice, server.config["server_name"])  # the server name is no localpart


def test_finds_by_new_display_name_and_not_the_old_one(server: ServerProcess, alice: RoomClient) -> None:
    bob = named_user(server, word())
    old, new = word(), word()
    set_display_name(bob, old)
    shared_private_room(alice, bob)
    assert found(alice, old) == [bob.user_id]
    set_display_name(bob, new)
    assert found(alice, new) == [bob.user_id]
    assert found(alice, old) == []


def test_member_of_a_public_room_is_found_by_a_stranger(server: ServerProcess, alice: RoomClient) -> None:
    localpart = word()
    bob = named_user(server, localpart)
    room = alice.create_room(visibility="public", preset="public_chat")
    bob.join(room)
    stranger = new_room_user(server.url)
    assert found(stranger, localpart) == [bob.user_id]


def test_user_in_no_shared_or_public_room_is_not_found(server: ServerProcess, alice: RoomClient) -> None:
    localpart = word()
    bob = named_user(server, localpart)
    bob.create_room(preset="private_chat")
    assert found(alice, localpart) == []


def test_user_is_no_longer_found_after_leaving_all_shared_rooms(server: ServerProcess, alice: RoomClient) -> None:
    localpart = word()
    bob = named_user(server, localpart)
    first, second = shared_private_room(alice, bob), shared_private_room(alice, bob)
    assert found(alice, localpart) == [bob.user_id]
    bob.leave(first)
    assert found(alice, localpart) == [bob.user_id]
    bob.leave(second)
    assert found(alice, localpart) == []


def test_deactivated_user_is_not_found(server: ServerProcess, alice: RoomClient) -> None:
    localpart = word()
    bob = named_user(server, localpart)
    room = alice.create_room(visibility="public", preset="public_chat")
    bob.join(room)
    assert found(alice, localpart) == [bob.user_id]
    deactivate = "/_matrix/client/v3/account/deactivate"
    session = bob.post(deactivate, {}).json()["session"]
    ok(bob.post(deactivate, {"auth": bob.password_auth(PASSWORD, session)}))
    assert found(alice, localpart) == []


def test_limit_and_limited(server: ServerProcess, alice: RoomClient) -> None:
    common = word()
    users = [named_user(server, f"{common}_{i}") for i in range(3)]
    shared_private_room(alice, *users)
    answer = search(alice, common, limit=2)
    assert answer["limited"] is True
    assert [r["user_id"] for r in answer["results"]] == sorted(u.user_id for u in users)[:2]
    answer = search(alice, common, limit=3)
    assert answer["limited"] is False
    assert len(answer["results"]) == 3
    assert search(alice, common)["limited"] is False  # the default limit, 10


def test_like_wildcards_in_the_term_match_only_themselves(server: ServerProcess, alice: RoomClient) -> None:
    base = word()
    bob = named_user(server, f"{base}_x")
    carol = named_user(server, f"{base}ax")
    set_display_name(carol, f"{base} 100% sure")
    shared_private_room(alice, bob, carol)
    assert found(alice, f"{base}_x") == [bob.user_id]
    assert found(alice, f"{base} 100%") == [carol.user_id]
    assert found(alice, f"{base}%x") == []


def test_missing_search_term_is_refused(alice: RoomClient) -> None:
    assert_error(alice.post(SEARCH, {"limit": 5}), 400, "M_MISSING_PARAM")
    assert_error(alice.post(SEARCH, {"search_term": 5}), 400, "M_INVALID_PARAM")
    assert_error(alice.post(SEARCH, {"search_term": "x", "limit": "ten"}), 400, "M_INVALID_PARAM")


def test_search_needs_an_access_token(anon: Client) -> None:
    assert_error(anon.post(SEARCH, {"search_term": "x"}), 401, "M_MISSING_TOKEN")


@pytest.fixture(scope="module")
def all_users_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp(f"user-directory-all-{backend}")
    with extra_server(backend, directory, {"user_directory": {"search_all_users": True}}) as process:
        yield process


def test_search_all_users_finds_a_user_in_no_room(all_users_server: ServerProcess) -> None:
    localpart = word()
    bob = named_user(all_users_server, localpart)
    searcher = new_room_user(all_users_server.url)
    assert found(searcher, localpart) == [bob.user_id]

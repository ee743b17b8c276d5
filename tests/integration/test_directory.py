"""Room aliases and the published room directory, through HTTP on both backends."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from homeserver.handlers.shared_secret_registration import registration_mac
from tests.client import PASSWORD, Client, RoomClient, assert_error, new_room_user, quote
from tests.integration.servers import extra_server
from tests.server import ServerProcess

DIRECTORY = "/_matrix/client/v3/directory/room"
LIST = "/_matrix/client/v3/directory/list/room"
PUBLIC_ROOMS = "/_matrix/client/v3/publicRooms"


def new_alias(server: ServerProcess) -> str:
    return f"#a{uuid.uuid4().hex[:10]}:{server.config['server_name']}"


def put_alias(user: Client, alias: str, room_id: str) -> requests.Response:
    return user.put(f"{DIRECTORY}/{quote(alias)}", {"room_id": room_id})


def get_alias(user: Client, alias: str) -> requests.Response:
    return user.get(f"{DIRECTORY}/{quote(alias)}")


def delete_alias(user: Client, alias: str) -> requests.Response:
    return user.delete(f"{DIRECTORY}/{quote(alias)}")


def search(user: Client, term: str, **body: Any) -> dict[str, Any]:
    response = user.post(PUBLIC_ROOMS, {"filter": {"generic_search_term": term}, **body})
    assert response.status_code == 200, response.text
    return response.json()


def unique_word() -> str:
    return "w" + uuid.uuid4().hex[:12]


# -- aliases ---------------------------------------------------------------------------------------------


def test_created_alias_resolves_to_the_room(server: ServerProcess, alice: RoomClient) -> None:
    room = alice.create_room()
    alias = new_alias(server)
    assert put_alias(alice, alias, room).status_code == 200
    response = get_alias(alice, alias)
    assert response.status_code == 200, response.text
    assert response.json() == {"room_id": room, "servers": [server.config["server_name"]]}


def test_alias_resolves_without_logging_in(server: ServerProcess, alice: RoomClient, anon: Client) -> None:
    room = alice.create_room()
    alias = new_alias(server)
    put_alias(alice, alias, room)
    assert get_alias(anon, alias).json()["room_id"] == room


def test_unknown_alias_is_not_found(server: ServerProcess, alice: RoomClient) -> None:
    assert_error(get_alias(alice, new_alias(server)), 404, "M_NOT_FOUND")


def test_taken_alias_conflicts(server: ServerProcess, alice: RoomClient) -> None:
    first, second = alice.create_room(), alice.create_room()
    alias = new_alias(server)
    put_alias(alice, alias, first)
    assert_error(put_alias(alice, alias, second), 409, "M_UNKNOWN")
    assert get_alias(alice, alias).json()["room_id"] == first


def test_malformed_alias_is_refused(server: ServerProcess, alice: RoomClient) -> None:
    room = alice.create_room()
    name = server.config["server_name"]
    for alias in ["#nocolon", f"nohash:{name}", f"#:{name}", f"#has space:{name}", "#x" * 200 + f":{name}"]:
        assert_error(put_alias(alice, alias, room), 400, "M_INVALID_PARAM")
    assert_error(get_alias(alice, "#nocolon"), 400, "M_INVALID_PARAM")


def test_alias_on_another_server_cannot_be_created(alice: RoomClient) -> None:
    room = alice.create_room()
    assert_error(put_alias(alice, "#elsewhere:example.org", room), 400, "M_INVALID_PARAM")


def test_alias_for_unknown_room_is_refused(server: ServerProcess, alice: RoomClient) -> None:
    assert_error(put_alias(alice, new_alias(server), "!nope:localhost"), 404, "M_NOT_FOUND")


def test_only_members_create_aliases(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    alias = new_alias(server)
    assert_error(put_alias(bob, alias, room), 403, "M_FORBIDDEN")
    bob.join(room)
    assert put_alias(bob, alias, room).status_code == 200


def test_aliases_need_a_token(server: ServerProcess, alice: RoomClient, anon: Client) -> None:
    room = alice.create_room()
    assert_error(put_alias(anon, new_alias(server), room), 401, "M_MISSING_TOKEN")


def test_deleted_alias_no_longer_resolves(server: ServerProcess, alice: RoomClient) -> None:
    room = alice.create_room()
    alias = new_alias(server)
    put_alias(alice, alias, room)
    assert delete_alias(alice, alias).status_code == 200
    assert_error(get_alias(alice, alias), 404, "M_NOT_FOUND")
    assert_error(delete_alias(alice, alias), 404, "M_NOT_FOUND")
    assert put_alias(alice, alias, room).status_code == 200  # the name is free again


def test_alias_creator_may_delete_it_without_power(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    alias = new_alias(server)
    assert put_alias(bob, alias, room).status_code == 200
    assert delete_alias(bob, alias).status_code == 200


def test_room_admin_may_delete_others_aliases(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    alias = new_alias(server)
    put_alias(bob, alias, room)
    assert delete_alias(alice, alias).status_code == 200


def test_member_without_power_cannot_delete_others_aliases(
    server: ServerProcess, alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    alias = new_alias(server)
    put_alias(alice, alias, room)
    assert_error(delete_alias(bob, alias), 403, "M_FORBIDDEN")
    assert_error(delete_alias(carol, alias), 403, "M_FORBIDDEN")  # not even in the room
    assert get_alias(alice, alias).json()["room_id"] == room


def test_deleting_the_canonical_alias_clears_it_from_the_room(server: ServerProcess, alice: RoomClient) -> None:
    word = unique_word()
    room = alice.create_room(visibility="public", room_alias_name=word, name=word)
    alias = f"#{word}:{server.config['server_name']}"
    assert search(alice, word)["chunk"][0]["canonical_alias"] == alias
    assert delete_alias(alice, alias).status_code == 200
    (entry,) = search(alice, word)["chunk"]
    assert entry["room_id"] == room
    assert "canonical_alias" not in entry


def test_deleting_an_alt_alias_drops_it_from_the_canonical_alias_event(
    server: ServerProcess, alice: RoomClient
) -> None:
    room = alice.create_room()
    main, alt, other = new_alias(server), new_alias(server), new_alias(server)
    for alias in (main, alt, other):
        put_alias(alice, alias, room)
    alice.send_state(room, "m.room.canonical_alias", {"alias": main, "alt_aliases": [alt, other]})
    assert delete_alias(alice, alt).status_code == 200
    assert canonical_alias(alice, room) == {"alias": main, "alt_aliases": [other]}
    assert delete_alias(alice, main).status_code == 200
    assert canonical_alias(alice, room) == {"alt_aliases": [other]}


def test_alias_creator_without_power_deletes_but_canonical_alias_stays(
    server: ServerProcess, alice: RoomClient, bob: RoomClient
) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    alias = new_alias(server)
    put_alias(bob, alias, room)
    alice.send_state(room, "m.room.canonical_alias", {"alias": alias})
    assert delete_alias(bob, alias).status_code == 200
    assert_error(get_alias(alice, alias), 404, "M_NOT_FOUND")
    assert canonical_alias(alice, room) == {"alias": alias}


def canonical_alias(user: RoomClient, room: str) -> dict[str, Any]:
    response = user.room_get(room, "state/m.room.canonical_alias/")
    assert response.status_code == 200, response.text
    return response.json()


def test_room_aliases_lists_local_aliases(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    first, second = sorted([new_alias(server), new_alias(server)])
    put_alias(alice, first, room)
    put_alias(alice, second, room)
    response = alice.room_get(room, "aliases")
    assert response.status_code == 200, response.text
    assert sorted(response.json()["aliases"]) == [first, second]


def test_room_aliases_is_for_members(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    put_alias(alice, new_alias(server), room)
    assert_error(bob.room_get(room, "aliases"), 403, "M_FORBIDDEN")
    assert_error(bob.room_get("!unknown:localhost", "aliases"), 403, "M_FORBIDDEN")


def test_room_aliases_of_world_readable_room_are_for_everyone(
    server: ServerProcess, alice: RoomClient, bob: RoomClient
) -> None:
    room = alice.create_room(preset="public_chat")
    alias = new_alias(server)
    put_alias(alice, alias, room)
    alice.send_state(room, "m.room.history_visibility", {"history_visibility": "world_readable"})
    response = bob.room_get(room, "aliases")
    assert response.status_code == 200, response.text
    assert response.json()["aliases"] == [alias]


def test_canonical_alias_must_point_at_the_room(server: ServerProcess, alice: RoomClient) -> None:
    room, other = alice.create_room(), alice.create_room()
    alias, elsewhere = new_alias(server), new_alias(server)
    put_alias(alice, alias, room)
    put_alias(alice, elsewhere, other)
    path = f"/_matrix/client/v3/rooms/{quote(room)}/state/m.room.canonical_alias/"
    assert alice.put(path, {"alias": alias}).status_code == 200
    assert_error(alice.put(path, {"alias": elsewhere}), 400, "M_BAD_ALIAS")
    assert_error(alice.put(path, {"alias": new_alias(server)}), 400, "M_BAD_ALIAS")
    assert_error(alice.put(path, {"alias": alias, "alt_aliases": [elsewhere]}), 400, "M_BAD_ALIAS")
    assert alice.put(path, {"alias": alias, "alt_aliases": [alias]}).status_code == 200
    assert alice.put(path, {}).status_code == 200  # removing the canonical alias


def test_canonical_alias_must_be_an_alias(alice: RoomClient) -> None:
    room = alice.create_room()
    path = f"/_matrix/client/v3/rooms/{quote(room)}/state/m.room.canonical_alias/"
    assert_error(alice.put(path, {"alias": "not-an-alias"}), 400, "M_INVALID_PARAM")
    assert_error(alice.put(path, {"alt_aliases": "#a:localhost"}), 400, "M_INVALID_PARAM")


# -- room visibility -------------------------------------------------------------------------------------


def visibility(user: Client, room: str) -> str:
    response = user.get(f"{LIST}/{quote(room)}")
    assert response.status_code == 200, response.text
    return response.json()["visibility"]


def test_visibility_follows_create_room(alice: RoomClient, anon: Client) -> None:
    assert visibility(anon, alice.create_room()) == "private"
    assert visibility(anon, alice.create_room(visibility="public")) == "public"


def test_visibility_of_unknown_room_is_not_found(alice: RoomClient) -> None:
    assert_error(alice.get(f"{LIST}/{quote('!nope:localhost')}"), 404, "M_NOT_FOUND")
    assert_error(alice.put(f"{LIST}/{quote('!nope:localhost')}", {"visibility": "public"}), 404, "M_NOT_FOUND")


def test_room_admin_publishes_and_unpublishes(alice: RoomClient) -> None:
    word = unique_word()
    room = alice.create_room(preset="public_chat", name=word)
    assert search(alice, word)["chunk"] == []
    assert alice.put(f"{LIST}/{quote(room)}", {"visibility": "public"}).status_code == 200
    assert visibility(alice, room) == "public"
    assert [e["room_id"] for e in search(alice, word)["chunk"]] == [room]
    assert alice.put(f"{LIST}/{quote(room)}", {"visibility": "private"}).status_code == 200
    assert visibility(alice, room) == "private"
    assert search(alice, word)["chunk"] == []


def test_visibility_defaults_to_public(alice: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    assert alice.put(f"{LIST}/{quote(room)}", {}).status_code == 200
    assert visibility(alice, room) == "public"


def test_normal_member_cannot_change_visibility(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    assert_error(bob.put(f"{LIST}/{quote(room)}", {"visibility": "public"}), 403, "M_FORBIDDEN")
    assert_error(carol.put(f"{LIST}/{quote(room)}", {"visibility": "public"}), 403, "M_FORBIDDEN")
    assert visibility(alice, room) == "private"


def test_member_given_power_may_change_visibility(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat", power_level_content_override={"users": {bob.user_id: 50}})
    bob.join(room)
    assert bob.put(f"{LIST}/{quote(room)}", {"visibility": "public"}).status_code == 200
    assert visibility(alice, room) == "public"


def test_invalid_visibility_is_refused(alice: RoomClient) -> None:
    room = alice.create_room()
    assert_error(alice.put(f"{LIST}/{quote(room)}", {"visibility": "secret"}), 400, "M_INVALID_PARAM")


# -- /publicRooms ----------------------------------------------------------------------------------------


def test_public_room_entry_describes_the_room(server: ServerProcess, alice: RoomClient, bob: RoomClient) -> None:
    word = unique_word()
    room = alice.create_room(visibility="public", name=f"Room {word}", topic="All about it", room_alias_name=word)
    alice.send_state(room, "m.room.avatar", {"url": "mxc://localhost/avatar"})
    bob.join(room)
    (entry,) = search(alice, word)["chunk"]
    assert entry == {
        "room_id": room,
        "name": f"Room {word}",
        "topic": "All about it",
        "canonical_alias": f"#{word}:{server.config['server_name']}",
        "avatar_url": "mxc://localhost/avatar",
        "num_joined_members": 2,
        "world_readable": False,
        "guest_can_join": False,
        "join_rule": "public",
    }


def test_public_room_entry_shows_room_type_and_guest_and_history_settings(alice: RoomClient) -> None:
    word = unique_word()
    room = alice.create_room(
        visibility="public",
        name=word,
        creation_content={"type": "m.space"},
        initial_state=[
            {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
            {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
        ],
    )
    (entry,) = search(alice, word)["chunk"]
    assert entry["room_id"] == room
    assert entry["room_type"] == "m.space"
    assert entry["guest_can_join"] is True
    assert entry["world_readable"] is True


def test_plain_text_topic_is_listed(alice: RoomClient) -> None:
    word = unique_word()
    room = alice.create_room(visibility="public", name=word)
    topic = {
        "topic": "fallback",
        "m.topic": {"m.text": [{"mimetype": "text/html", "body": "<b>rich</b>"}, {"body": "plain"}]},
    }
    alice.send_state(room, "m.room.topic", topic)
    assert search(alice, word)["chunk"][0]["topic"] == "plain"


def test_search_term_matches_name_topic_and_alias(alice: RoomClient) -> None:
    word = unique_word()
    by_name = alice.create_room(visibility="public", name=f"The {word.upper()} room")
    by_topic = alice.create_room(visibility="public", topic=f"talk about {word} here")
    by_alias = alice.create_room(visibility="public", room_alias_name=f"x{word}x")
    alice.create_room(visibility="public", name="unrelated")
    found = {e["room_id"] for e in search(alice, word)["chunk"]}
    assert found == {by_name, by_topic, by_alias}
    assert search(alice, word)["total_room_count_estimate"] == 3


def test_private_rooms_are_not_listed(alice: RoomClient) -> None:
    word = unique_word()
    alice.create_room(preset="public_chat", name=word)
    alice.create_room(visibility="private", name=word)
    assert search(alice, word)["chunk"] == []


def test_published_invite_only_room_is_not_listed(alice: RoomClient) -> None:
    word = unique_word()
    alice.create_room(visibility="public", preset="private_chat", name=word)
    assert search(alice, word)["chunk"] == []


def test_room_everyone_left_is_not_listed(alice: RoomClient) -> None:
    word = unique_word()
    room = alice.create_room(visibility="public", name=word)
    alice.leave(room)
    assert search(alice, word)["chunk"] == []


def test_room_types_filter(alice: RoomClient) -> None:
    word = unique_word()
    space = alice.create_room(visibility="public", name=word, creation_content={"type": "m.space"})
    room = alice.create_room(visibility="public", name=word)
    assert [
        e["room_id"]
        for e in search(alice, word, filter={"generic_search_term": word, "room_types": ["m.space"]})["chunk"]
    ] == [space]
    plain = search(alice, word, filter={"generic_search_term": word, "room_types": [None]})
    assert [e["room_id"] for e in plain["chunk"]] == [room]


def test_rooms_are_ordered_by_size(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    word = unique_word()
    small = alice.create_room(visibility="public", name=word)
    big = alice.create_room(visibility="public", name=word)
    bob.join(big)
    carol.join(big)
    middle = alice.create_room(visibility="public", name=word)
    bob.join(middle)
    chunk = search(alice, word)["chunk"]
    assert [e["room_id"] for e in chunk] == [big, middle, small]
    assert [e["num_joined_members"] for e in chunk] == [3, 2, 1]


def test_pagination_walks_forward_and_back(alice: RoomClient) -> None:
    word = unique_word()
    rooms = {alice.create_room(visibility="public", name=word) for _ in range(5)}
    first = search(alice, word, limit=2)
    assert len(first["chunk"]) == 2 and first["total_room_count_estimate"] == 5
    assert "prev_batch" not in first
    second = search(alice, word, limit=2, since=first["next_batch"])
    third = search(alice, word, limit=2, since=second["next_batch"])
    assert len(second["chunk"]) == 2 and len(third["chunk"]) == 1
    assert "next_batch" not in third
    seen = [e["room_id"] for page in (first, second, third) for e in page["chunk"]]
    assert sorted(seen) == sorted(rooms)
    back = search(alice, word, limit=2, since=third["prev_batch"])
    assert back["chunk"] == second["chunk"]
    assert search(alice, word, limit=2, since=back["prev_batch"])["chunk"] == first["chunk"]


def test_get_public_rooms_pages_through_everything(alice: RoomClient, anon: Client) -> None:
    mine = {alice.create_room(visibility="public") for _ in range(3)}
    seen: list[str] = []
    since = None
    while True:
        response = anon.get(PUBLIC_ROOMS, params={"limit": 2, **({"since": since} if since else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["chunk"]) <= 2
        seen += [e["room_id"] for e in page["chunk"]]
        since = page.get("next_batch")
        if since is None:
            break
    assert len(seen) == len(set(seen)) == page["total_room_count_estimate"]
    assert mine <= set(seen)


def test_public_rooms_accepts_own_server_name(server: ServerProcess, alice: RoomClient) -> None:
    name = server.config["server_name"]
    assert alice.get(PUBLIC_ROOMS, params={"server": name}).status_code == 200
    assert alice.post(f"{PUBLIC_ROOMS}?server={name}", {}).status_code == 200


def test_public_rooms_of_an_unreachable_server_is_502(alice: RoomClient) -> None:
    # Another server's directory is asked for over federation (tests/integration/test_federation_edus.py).
    assert_error(alice.get(PUBLIC_ROOMS, params={"server": "127.0.0.1:9"}), 502, "M_UNKNOWN")
    assert_error(alice.post(f"{PUBLIC_ROOMS}?server=127.0.0.1:9", {}), 502, "M_UNKNOWN")


def test_bad_since_token_is_refused(alice: RoomClient) -> None:
    assert_error(alice.get(PUBLIC_ROOMS, params={"since": "garbage"}), 400, "M_INVALID_PARAM")
    assert_error(alice.post(PUBLIC_ROOMS, {"since": "f12"}), 400, "M_INVALID_PARAM")
    assert_error(alice.post(PUBLIC_ROOMS, {"since": "f\u00b2_!room:localhost"}), 400, "M_INVALID_PARAM")


def test_post_public_rooms_needs_a_token(anon: Client) -> None:
    assert_error(anon.post(PUBLIC_ROOMS, {}), 401, "M_MISSING_TOKEN")


# -- server admins ---------------------------------------------------------------------------------------

SHARED_SECRET = "directory-test-secret"


@pytest.fixture(scope="module")
def admin_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that can register admins (a shared secret), for what only admins may do."""
    directory = tmp_path_factory.mktemp(f"directory-admin-{backend}")
    with extra_server(backend, directory, {"registration_shared_secret": SHARED_SECRET}) as process:
        yield process


def new_admin(server: ServerProcess) -> RoomClient:
    client = RoomClient(server.url)
    nonce = client.get("/_homeserver/admin/v1/register").json()["nonce"]
    username = "admin_" + uuid.uuid4().hex[:8]
    mac = registration_mac(SHARED_SECRET, nonce, username, PASSWORD, True)
    body = {"nonce": nonce, "username": username, "password": PASSWORD, "admin": True, "mac": mac}
    response = client.post("/_homeserver/admin/v1/register", body)
    assert response.status_code == 200, response.text
    client.access_token, client.user_id = response.json()["access_token"], response.json()["user_id"]
    return client


def test_server_admin_manages_rooms_it_is_not_in(admin_server: ServerProcess) -> None:
    owner, admin = new_room_user(admin_server.url), new_admin(admin_server)
    room = owner.create_room()
    alias = new_alias(admin_server)
    put_alias(owner, alias, room)
    response = admin.room_get(room, "aliases")
    assert response.status_code == 200, response.text
    assert response.json()["aliases"] == [alias]
    assert admin.put(f"{LIST}/{quote(room)}", {"visibility": "public"}).status_code == 200
    assert visibility(owner, room) == "public"
    assert delete_alias(admin, alias).status_code == 200
    assert_error(get_alias(owner, alias), 404, "M_NOT_FOUND")

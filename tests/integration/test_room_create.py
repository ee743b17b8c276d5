"""createRoom: presets, names and topics, aliases, invites, initial state, power levels, room versions."""

import uuid
from typing import Any

import pytest
import requests

from tests.client import Client, RoomClient, assert_error, ok, quote
from tests.server import ServerProcess

CREATE = "/_matrix/client/v3/createRoom"
ROOMS = "/_matrix/client/v3/rooms"
PUBLIC_ROOMS = "/_matrix/client/v3/publicRooms"
ALL_VERSIONS = [str(n) for n in range(1, 13)]


def join(user: Client, room: str) -> requests.Response:
    return user.post(f"/_matrix/client/v3/join/{quote(room)}", {})


def set_state(user: Client, room: str, event_type: str, content: dict[str, Any], key: str = "") -> requests.Response:
    return user.put(f"{ROOMS}/{quote(room)}/state/{event_type}/{quote(key)}", content)


def invite(user: Client, room: str, user_id: str) -> requests.Response:
    return user.post(f"{ROOMS}/{quote(room)}/invite", {"user_id": user_id})


def joined_rooms(user: Client) -> list[str]:
    return user.get("/_matrix/client/v3/joined_rooms").json()["joined_rooms"]


def directory_entry(user: Client, word: str) -> dict[str, Any]:
    response = user.post(PUBLIC_ROOMS, {"filter": {"generic_search_term": word}})
    assert response.status_code == 200, response.text
    (entry,) = response.json()["chunk"]
    return entry


def state_event(user: Client, room: str, event_type: str, key: str = "") -> dict[str, Any]:
    """The content of a state event, through GET /rooms/{id}/state (skips the test until it is served)."""
    response = user.get(f"{ROOMS}/{quote(room)}/state/{event_type}/{quote(key)}")
    if response.status_code == 404 and response.json().get("errcode") == "M_UNRECOGNIZED":
        pytest.skip("GET /rooms/{roomId}/state/{eventType}/{stateKey} is not served yet")
    assert response.status_code == 200, response.text
    return response.json()


def unique_word() -> str:
    return "w" + uuid.uuid4().hex[:12]


# -- the basics ------------------------------------------------------------------------------------------


def test_create_room_returns_its_id_and_creator_is_joined(alice: RoomClient) -> None:
    response = alice.post(CREATE, {})
    assert response.status_code == 200, response.text
    room = response.json()["room_id"]
    assert room.startswith("!")
    assert "room_alias" not in response.json()
    assert room in joined_rooms(alice)


def test_create_room_needs_a_token(anon: Client) -> None:
    assert_error(anon.post(CREATE, {}), 401, "M_MISSING_TOKEN")


def test_create_room_body_must_be_an_object(alice: RoomClient) -> None:
    assert_error(alice.request("POST", CREATE, data=b"[]"), 400, "M_BAD_JSON")
    assert_error(alice.request("POST", CREATE, data=b"nope"), 400, "M_NOT_JSON")


@pytest.mark.parametrize(
    "body",
    [
        {"preset": "party"},
        {"visibility": "hidden"},
        {"name": 5},
        {"invite": "@bob:localhost"},
        {"invite": [5]},
        {"initial_state": [{"content": {}}]},
        {"initial_state": [{"type": "m.room.topic", "state_key": 1, "content": {}}]},
        {"power_level_content_override": []},
        {"creation_content": "x"},
        {"is_direct": "yes"},
    ],
)
def test_invalid_parameters_are_refused(alice: RoomClient, body: dict[str, Any]) -> None:
    assert_error(alice.post(CREATE, body), 400, "M_INVALID_PARAM")


# -- presets and visibility -----------------------------------------------------------------------------


def test_private_chat_is_invite_only(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="private_chat")
    assert_error(join(bob, room), 403, "M_FORBIDDEN")


def test_private_chat_lets_any_member_invite(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = alice.create_room(preset="private_chat", invite=[bob.user_id])
    bob.join(room)
    assert invite(bob, room, carol.user_id).status_code == 200
    assert carol.join(room) == room


def test_private_chat_is_the_default_for_private_rooms(alice: RoomClient, bob: RoomClient) -> None:
    assert_error(join(bob, alice.create_room()), 403, "M_FORBIDDEN")
    assert_error(join(bob, alice.create_room(visibility="private")), 403, "M_FORBIDDEN")


def test_public_chat_lets_anyone_join(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    assert bob.join(room) == room
    assert room in joined_rooms(bob)


def test_public_chat_is_the_default_for_public_rooms(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(visibility="public")
    assert bob.join(room) == room


def test_public_chat_needs_power_to_invite(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    assert_error(invite(bob, room, carol.user_id), 403, "M_FORBIDDEN")
    assert invite(alice, room, carol.user_id).status_code == 200


@pytest.mark.parametrize("version", ["10", "12"])
def test_trusted_private_chat_gives_invitees_the_creators_power(
    alice: RoomClient, bob: RoomClient, carol: RoomClient, version: str
) -> None:
    room = alice.create_room(preset="trusted_private_chat", invite=[bob.user_id], room_version=version)
    bob.join(room)
    assert set_state(bob, room, "m.room.name", {"name": "ours"}).status_code == 200
    # Bob may raise carol to his own level; before v12 alice and bob keep theirs, from v12 creators are unlisted.
    users = {carol.user_id: 100} if version == "12" else {alice.user_id: 100, bob.user_id: 100, carol.user_id: 100}
    assert set_state(bob, room, "m.room.power_levels", {"users": users}).status_code == 200


def test_trusted_private_chat_invitees_are_additional_creators_from_v12(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="trusted_private_chat", invite=[bob.user_id], room_version="12")
    assert state_event(alice, room, "m.room.create")["additional_creators"] == [bob.user_id]
    assert bob.user_id not in state_event(alice, room, "m.room.power_levels")["users"]


def test_trusted_private_chat_is_invite_only(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="trusted_private_chat")
    assert_error(join(bob, room), 403, "M_FORBIDDEN")


def test_public_room_is_published(alice: RoomClient) -> None:
    word = unique_word()
    room = alice.create_room(visibility="public", name=word)
    assert directory_entry(alice, word)["room_id"] == room
    assert alice.get(f"/_matrix/client/v3/directory/list/room/{quote(room)}").json() == {"visibility": "public"}


def test_public_chat_preset_alone_does_not_publish(alice: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    assert alice.get(f"/_matrix/client/v3/directory/list/room/{quote(room)}").json() == {"visibility": "private"}


# -- name, topic, alias ----------------------------------------------------------------------------------


def test_name_and_topic_are_set(alice: RoomClient) -> None:
    word = unique_word()
    alice.create_room(visibility="public", name=f"Name {word}", topic=f"Topic {word}")
    entry = directory_entry(alice, word)
    assert entry["name"] == f"Name {word}"
    assert entry["topic"] == f"Topic {word}"


def test_name_and_topic_events(alice: RoomClient) -> None:
    room = alice.create_room(name="The name", topic="The topic")
    assert state_event(alice, room, "m.room.name") == {"name": "The name"}
    topic = state_event(alice, room, "m.room.topic")
    assert topic["topic"] == "The topic"
    assert topic["m.topic"] == {"m.text": [{"body": "The topic", "mimetype": "text/plain"}]}


def test_room_alias_name_makes_an_alias_and_canonical_alias(server: ServerProcess, alice: RoomClient) -> None:
    word = unique_word()
    response = alice.post(CREATE, {"room_alias_name": word, "visibility": "public", "name": word})
    assert response.status_code == 200, response.text
    alias = f"#{word}:{server.config['server_name']}"
    room = response.json()["room_id"]
    assert response.json()["room_alias"] == alias
    assert alice.get(f"/_matrix/client/v3/directory/room/{quote(alias)}").json()["room_id"] == room
    assert directory_entry(alice, word)["canonical_alias"] == alias


def test_taken_alias_is_room_in_use(alice: RoomClient, bob: RoomClient) -> None:
    word = unique_word()
    alice.create_room(room_alias_name=word)
    assert_error(bob.post(CREATE, {"room_alias_name": word}), 400, "M_ROOM_IN_USE")


def test_alias_taken_by_an_alias_added_later_is_room_in_use(server: ServerProcess, alice: RoomClient) -> None:
    word = unique_word()
    room = alice.create_room()
    alias = f"#{word}:{server.config['server_name']}"
    assert alice.put(f"/_matrix/client/v3/directory/room/{quote(alias)}", {"room_id": room}).status_code == 200
    assert_error(alice.post(CREATE, {"room_alias_name": word}), 400, "M_ROOM_IN_USE")


def test_failed_creation_leaves_no_room(alice: RoomClient) -> None:
    word = unique_word()
    alice.create_room(room_alias_name=word)
    before = joined_rooms(alice)
    alice.post(CREATE, {"room_alias_name": word})
    assert joined_rooms(alice) == before


@pytest.mark.parametrize("localpart", ["with:colon", "#hash", "with space", "", "x" * 300])
def test_invalid_alias_name_is_refused(alice: RoomClient, localpart: str) -> None:
    assert_error(alice.post(CREATE, {"room_alias_name": localpart}), 400, "M_INVALID_PARAM")


# -- invites ---------------------------------------------------------------------------------------------


def test_invitees_can_join_the_invite_only_room(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = alice.create_room(invite=[bob.user_id])
    assert bob.join(room) == room
    assert room in joined_rooms(bob)
    assert_error(join(carol, room), 403, "M_FORBIDDEN")


def test_invite_is_visible_to_the_invitee(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(invite=[bob.user_id])
    assert state_event(alice, room, "m.room.member", bob.user_id)["membership"] == "invite"


def test_direct_invite_is_marked(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(invite=[bob.user_id], is_direct=True, preset="trusted_private_chat")
    member = state_event(alice, room, "m.room.member", bob.user_id)
    assert member["membership"] == "invite"
    assert member["is_direct"] is True


def test_a_remote_invitee_whose_server_cannot_be_reached_does_not_stop_the_room(alice: RoomClient) -> None:
    # 10.0.0.1 is in the default ip_range_blacklist: its server is never asked, so the invite fails at once.
    room = ok(alice.post(CREATE, {"invite": ["@someone:10.0.0.1"], "name": "still made"}))["room_id"]
    assert state_event(alice, room, "m.room.name")["name"] == "still made"
    assert_error(alice.get(f"/_matrix/client/v3/rooms/{room}/state/m.room.member/@someone:10.0.0.1"), 404)


def test_invite_of_malformed_user_id_is_refused(alice: RoomClient) -> None:
    assert_error(alice.post(CREATE, {"invite": ["bob"]}), 400, "M_INVALID_PARAM")


# -- initial state, power levels, creation content ------------------------------------------------------


def test_initial_state_overrides_the_preset(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(
        preset="private_chat", initial_state=[{"type": "m.room.join_rules", "content": {"join_rule": "public"}}]
    )
    assert bob.join(room) == room


def test_initial_state_custom_event(alice: RoomClient) -> None:
    room = alice.create_room(
        initial_state=[{"type": "org.example.settings", "state_key": "k", "content": {"colour": "blue"}}]
    )
    assert state_event(alice, room, "org.example.settings", "k") == {"colour": "blue"}


def test_initial_state_world_readable_room(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(
        initial_state=[{"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}]
    )
    assert bob.room_get(room, "aliases").status_code == 200  # readable by non-members


def test_power_level_override_grants_power(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat", power_level_content_override={"users": {bob.user_id: 50}})
    bob.join(room)
    assert set_state(bob, room, "m.room.topic", {"topic": "bob's now"}).status_code == 200


def test_power_level_override_applies_in_old_versions(alice: RoomClient, bob: RoomClient) -> None:
    override = {"users": {alice.user_id: 100, bob.user_id: 50}}
    room = alice.create_room(preset="public_chat", room_version="10", power_level_content_override=override)
    bob.join(room)
    assert set_state(bob, room, "m.room.topic", {"topic": "bob's now"}).status_code == 200


def test_power_levels_the_room_rules_forbid_are_invalid_room_state(alice: RoomClient) -> None:
    # v1-11: without a level of their own the creator cannot send the preset's events.
    body = {"room_version": "10", "power_level_content_override": {"users": {}}}
    assert_error(alice.post(CREATE, body), 400, "M_INVALID_ROOM_STATE")
    # v12: creators have unlimited power and may not be listed.
    body = {"room_version": "12", "power_level_content_override": {"users": {alice.user_id: 100}}}
    assert_error(alice.post(CREATE, body), 400, "M_INVALID_ROOM_STATE")


def test_initial_state_the_room_rules_forbid_is_invalid_room_state(alice: RoomClient, bob: RoomClient) -> None:
    body = {"initial_state": [{"type": "org.example.x", "state_key": bob.user_id, "content": {}}]}
    assert_error(alice.post(CREATE, body), 400, "M_INVALID_ROOM_STATE")


def test_power_level_override_raises_levels(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat", power_level_content_override={"events_default": 20})
    bob.join(room)
    response = bob.put(f"{ROOMS}/{quote(room)}/send/m.room.message/t", {"msgtype": "m.text", "body": "hi"})
    assert_error(response, 403, "M_FORBIDDEN")


def test_power_level_override_can_keep_the_creator_in_charge_in_old_versions(alice: RoomClient) -> None:
    room = alice.create_room(room_version="10", power_level_content_override={"state_default": 100})
    assert set_state(alice, room, "m.room.topic", {"topic": "fine"}).status_code == 200


def test_creation_content_sets_room_type(alice: RoomClient) -> None:
    word = unique_word()
    alice.create_room(visibility="public", name=word, creation_content={"type": "m.space"})
    assert directory_entry(alice, word)["room_type"] == "m.space"


def test_creation_content_cannot_change_the_room_version_or_creator(alice: RoomClient, bob: RoomClient) -> None:
    content = {"room_version": "1", "creator": bob.user_id}
    create = state_event(alice, alice.create_room(room_version="10", creation_content=content), "m.room.create")
    assert create["room_version"] == "10"
    assert create["creator"] == alice.user_id
    create = state_event(alice, alice.create_room(room_version="11", creation_content=content), "m.room.create")
    assert create["room_version"] == "11"
    assert "creator" not in create


# -- room versions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_room_version_creates_a_working_room(alice: RoomClient, bob: RoomClient, version: str) -> None:
    room = alice.create_room(room_version=version, preset="public_chat", name="v" + version)
    assert bob.join(room) == room
    bob.send_text(room, "hello")
    bob.leave(room)
    assert room not in joined_rooms(bob)


def test_room_version_12_room_id_is_its_create_event_hash(alice: RoomClient) -> None:
    room = alice.create_room(room_version="12")
    assert room.startswith("!") and ":" not in room


def test_room_version_1_room_id_has_a_server_name(server: ServerProcess, alice: RoomClient) -> None:
    room = alice.create_room(room_version="1")
    assert room.endswith(":" + server.config["server_name"])


@pytest.mark.parametrize("version", ["13", "0", "foo", "1.0"])
def test_unknown_room_version_is_unsupported(alice: RoomClient, version: str) -> None:
    assert_error(alice.post(CREATE, {"room_version": version}), 400, "M_UNSUPPORTED_ROOM_VERSION")


def test_capabilities_list_every_version_with_12_as_default(alice: RoomClient) -> None:
    response = alice.get("/_matrix/client/v3/capabilities")
    assert response.status_code == 200, response.text
    versions = response.json()["capabilities"]["m.room_versions"]
    assert versions["default"] == "12"
    assert versions["available"] == dict.fromkeys(ALL_VERSIONS, "stable")


def test_capabilities_need_a_token(anon: Client) -> None:
    assert_error(anon.get("/_matrix/client/v3/capabilities"), 401, "M_MISSING_TOKEN")


def test_default_room_version_is_12(alice: RoomClient) -> None:
    room = alice.create_room()
    assert ":" not in room  # only v12 room ids have no server name

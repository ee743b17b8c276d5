"""Joins, leaves and invites across servers, against a real Synapse (room version 12 rooms there) and
between two of our own servers. Our server runs on both backends; one Synapse serves the module."""

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from signedjson.key import read_signing_keys

from homeserver.core.event_hashing import compute_event_id, content_hash_base64
from homeserver.core.event_signing import add_hashes_and_signatures
from homeserver.core.federation_auth import sign_request
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from tests.client import RoomClient, assert_error, new_room_user, ok, quote
from tests.federation_servers import FederatingServer, federating_server
from tests.synapse import SynapseProcess

# The test servers' certificates are self-signed.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
T = TypeVar("T")
DEADLINE_S = 60.0


def eventually(probe: Callable[[], T | None], what: str, timeout: float = DEADLINE_S) -> T:
    """The first truthy answer of `probe`, polled until `timeout`: federation delivers asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def join_via(user: RoomClient, room: str, server: str) -> str:
    path = f"/_matrix/client/v3/join/{quote(room)}"
    return ok(user.post(path, {}, params={"server_name": server}))["room_id"]


def texts(user: RoomClient, room_id: str) -> list[str]:
    answer = user.room_get(room_id, "messages", dir="b", limit=50)
    if answer.status_code != 200:
        return []
    return [e["content"].get("body") for e in answer.json()["chunk"] if e["type"] == "m.room.message"]


def membership(user: RoomClient, room_id: str, user_id: str) -> str | None:
    answer = user.room_get(room_id, f"state/m.room.member/{quote(user_id)}")
    return answer.json().get("membership") if answer.status_code == 200 else None


def sees_text(user: RoomClient, room_id: str, text: str) -> Callable[[], bool]:
    return lambda: text in texts(user, room_id)


def sees_membership(user: RoomClient, room_id: str, user_id: str, wanted: str) -> Callable[[], bool]:
    return lambda: membership(user, room_id, user_id) == wanted


def sync(user: RoomClient, since: str | None = None) -> dict[str, Any]:
    params = {"timeout": 0, **({"since": since} if since else {})}
    return ok(user.get("/_matrix/client/v3/sync", params=params))


def sync_rooms(user: RoomClient) -> dict[str, Any]:
    return sync(user)["rooms"]


def talk_both_ways(ours: RoomClient, theirs: RoomClient, room_id: str) -> None:
    hello = f"hello from ours {uuid.uuid4().hex[:6]}"
    ours.send_text(room_id, hello)
    eventually(sees_text(theirs, room_id, hello), "our message at the other server")
    reply = f"hello from theirs {uuid.uuid4().hex[:6]}"
    theirs.send_text(room_id, reply)
    eventually(sees_text(ours, room_id, reply), "their message at our server")


def alias_name() -> str:
    return "fedj_" + uuid.uuid4().hex[:8]


# -- a Synapse user in our rooms ---------------------------------------------------------------------


def test_synapse_user_joins_our_room_by_id(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice = new_room_user(fed_server.url)
    room_id = alice.create_room(preset="public_chat")
    sam = synapse.register()
    assert join_via(sam, room_id, fed_server.server_name) == room_id
    assert membership(alice, room_id, sam.user_id) == "join"
    talk_both_ways(alice, sam, room_id)


def test_synapse_user_joins_our_room_by_alias(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice = new_room_user(fed_server.url)
    name = alias_name()
    room_id = alice.create_room(preset="public_chat", room_alias_name=name)
    sam = synapse.register()
    assert sam.join(f"#{name}:{fed_server.server_name}") == room_id
    assert membership(alice, room_id, sam.user_id) == "join"
    assert eventually(sees_membership(sam, room_id, alice.user_id, "join"), "our member at Synapse")


def test_we_invite_a_synapse_user_who_joins_then_leaves(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice = new_room_user(fed_server.url)
    room_id = alice.create_room(preset="private_chat")
    sam = synapse.register()
    alice.invite(room_id, sam.user_id)
    assert membership(alice, room_id, sam.user_id) == "invite"
    eventually(lambda: room_id in sync_rooms(sam)["invite"], "the invite in the Synapse user's sync")
    assert sam.join(room_id) == room_id
    assert membership(alice, room_id, sam.user_id) == "join"
    talk_both_ways(alice, sam, room_id)
    sam.leave(room_id)
    eventually(sees_membership(alice, room_id, sam.user_id, "leave"), "the Synapse user's leave at our server")


def test_creating_a_room_with_a_synapse_user_in_invite_invites_them(
    fed_server: FederatingServer, synapse: SynapseProcess
) -> None:
    alice = new_room_user(fed_server.url)
    sam = synapse.register()
    room_id = alice.create_room(preset="trusted_private_chat", invite=[sam.user_id], is_direct=True)
    assert membership(alice, room_id, sam.user_id) == "invite"
    eventually(lambda: room_id in sync_rooms(sam)["invite"], "the invite in the Synapse user's sync")
    assert sam.join(room_id) == room_id
    talk_both_ways(alice, sam, room_id)


def test_synapse_user_rejects_our_invite(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice = new_room_user(fed_server.url)
    room_id = alice.create_room(preset="private_chat")
    sam = synapse.register()
    alice.invite(room_id, sam.user_id)
    eventually(lambda: room_id in sync_rooms(sam)["invite"], "the invite in the Synapse user's sync")
    sam.leave(room_id)
    assert membership(alice, room_id, sam.user_id) == "leave"


def test_synapse_refuses_a_join_to_our_invite_only_room(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice = new_room_user(fed_server.url)
    room_id = alice.create_room(preset="private_chat")
    sam = synapse.register()
    answer = sam.post(f"/_matrix/client/v3/join/{quote(room_id)}", {}, params={"server_name": fed_server.server_name})
    assert answer.status_code == 403, answer.text
    assert membership(alice, room_id, sam.user_id) is None


# -- our user in Synapse's rooms (room version 12: ids without a server part) ------------------------------


def test_our_user_joins_a_synapse_room_by_id(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    sam = synapse.register()
    room_id = sam.create_room(preset="public_chat", name="Synapse's room")
    assert ":" not in room_id  # room version 12
    alice = new_room_user(fed_server.url)
    assert join_via(alice, room_id, synapse.server_name) == room_id
    joined = sync_rooms(alice)["join"][room_id]
    state = joined["state"]["events"] + joined["timeline"]["events"]
    assert any(e["type"] == "m.room.name" and e["content"]["name"] == "Synapse's room" for e in state), joined
    assert any(e["type"] == "m.room.member" and e["state_key"] == alice.user_id for e in joined["timeline"]["events"])
    eventually(sees_membership(sam, room_id, alice.user_id, "join"), "our join at Synapse")
    talk_both_ways(alice, sam, room_id)


def test_our_user_joins_a_synapse_room_by_alias(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    sam = synapse.register()
    name = alias_name()
    room_id = sam.create_room(preset="public_chat", room_alias_name=name)
    alice = new_room_user(fed_server.url)
    assert alice.join(f"#{name}:{synapse.server_name}") == room_id
    eventually(sees_membership(sam, room_id, alice.user_id, "join"), "our join at Synapse")


def test_synapse_invites_our_user_who_joins_then_leaves(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    sam = synapse.register()
    room_id = sam.create_room(preset="private_chat", name="Invite only")
    alice = new_room_user(fed_server.url)
    sam.invite(room_id, alice.user_id)
    invite = sync_rooms(alice)["invite"][room_id]["invite_state"]["events"]
    assert any(e["type"] == "m.room.name" and e["content"]["name"] == "Invite only" for e in invite)
    assert any(e["type"] == "m.room.member" and e["state_key"] == alice.user_id for e in invite)
    assert alice.join(room_id) == room_id
    eventually(sees_membership(sam, room_id, alice.user_id, "join"), "our join at Synapse")
    talk_both_ways(alice, sam, room_id)
    alice.leave(room_id)
    eventually(sees_membership(sam, room_id, alice.user_id, "leave"), "our leave at Synapse")


def test_synapse_invites_a_second_user_of_ours_to_a_room_we_hold(
    fed_server: FederatingServer, synapse: SynapseProcess
) -> None:
    sam = synapse.register()
    room_id = sam.create_room(preset="private_chat")
    alice, carol = new_room_user(fed_server.url), new_room_user(fed_server.url)
    sam.invite(room_id, alice.user_id)
    alice.join(room_id)
    sam.invite(room_id, carol.user_id)  # our server is in the room: the invite is a state change there
    assert membership(alice, room_id, carol.user_id) == "invite"
    assert room_id in sync_rooms(carol)["invite"]
    assert carol.join(room_id) == room_id
    eventually(sees_membership(sam, room_id, carol.user_id, "join"), "our second user's join at Synapse")
    talk_both_ways(carol, sam, room_id)


def test_our_user_rejects_a_synapse_invite(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    sam = synapse.register()
    room_id = sam.create_room(preset="private_chat")
    alice = new_room_user(fed_server.url)
    sam.invite(room_id, alice.user_id)
    first = sync(alice)
    assert room_id in first["rooms"]["invite"]
    alice.leave(room_id)
    assert room_id not in sync(alice, first["next_batch"])["rooms"]["invite"]
    assert membership(alice, room_id, alice.user_id) is None  # we do not hold the room
    eventually(sees_membership(sam, room_id, alice.user_id, "leave"), "the rejection at Synapse")


def knock_via(user: RoomClient, room_id: str, server: str) -> str:
    path = f"/_matrix/client/v3/knock/{quote(room_id)}"
    return ok(user.post(path, {"reason": "let me in"}, params={"server_name": server}))["room_id"]


KNOCK_RULES = [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]


def test_synapse_user_knocks_on_our_room_and_is_let_in(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice = new_room_user(fed_server.url)
    room_id = alice.create_room(initial_state=KNOCK_RULES)
    sam = synapse.register()
    assert knock_via(sam, room_id, fed_server.server_name) == room_id
    assert membership(alice, room_id, sam.user_id) == "knock"
    alice.invite(room_id, sam.user_id)
    assert sam.join(room_id) == room_id
    eventually(sees_membership(alice, room_id, sam.user_id, "join"), "the Synapse user's join at our server")


def test_our_user_knocks_on_a_synapse_room_and_is_let_in(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    sam = synapse.register()
    room_id = sam.create_room(initial_state=KNOCK_RULES, name="Knock first")
    alice = new_room_user(fed_server.url)
    first = sync(alice)
    assert knock_via(alice, room_id, synapse.server_name) == room_id
    knocked = sync(alice, first["next_batch"])["rooms"]["knock"][room_id]["knock_state"]["events"]
    assert any(e["type"] == "m.room.name" and e["content"]["name"] == "Knock first" for e in knocked)
    eventually(sees_membership(sam, room_id, alice.user_id, "knock"), "our knock at Synapse")
    sam.invite(room_id, alice.user_id)
    eventually(lambda: room_id in sync_rooms(alice)["invite"], "the invite that answers our knock")
    assert alice.join(room_id) == room_id
    eventually(sees_membership(sam, room_id, alice.user_id, "join"), "our join at Synapse")


def test_our_user_rescinds_a_knock_on_a_synapse_room(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    sam = synapse.register()
    room_id = sam.create_room(initial_state=KNOCK_RULES)
    alice = new_room_user(fed_server.url)
    knock_via(alice, room_id, synapse.server_name)
    alice.leave(room_id)
    eventually(sees_membership(sam, room_id, alice.user_id, "leave"), "the rescinded knock at Synapse")


def test_joining_an_unknown_remote_room_is_a_matrix_error(
    fed_server: FederatingServer, synapse: SynapseProcess
) -> None:
    alice = new_room_user(fed_server.url)
    answer = alice.post(
        f"/_matrix/client/v3/join/{quote('!nosuchroom:' + synapse.server_name)}",
        {},
        params={"server_name": synapse.server_name},
    )
    assert_error(answer, 404)


# -- two of our servers ------------------------------------------------------------------------------------


def test_two_of_our_servers_share_a_room(backend: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with federating_server(backend, tmp_path / "a") as a, federating_server(backend, tmp_path / "b") as b:
        alice, bob = new_room_user(a.url), new_room_user(b.url)
        room_id = alice.create_room(preset="private_chat")
        alice.invite(room_id, bob.user_id)
        assert room_id in sync_rooms(bob)["invite"]
        assert bob.join(room_id) == room_id
        assert membership(alice, room_id, bob.user_id) == "join"
        talk_both_ways(alice, bob, room_id)
        bob.leave(room_id)
        eventually(sees_membership(alice, room_id, bob.user_id, "leave"), "the leave at the room's server")


def test_a_restricted_room_lets_in_a_remote_member_of_the_allowed_room(
    pair: tuple[FederatingServer, FederatingServer],
) -> None:
    a, b = pair
    alice, bob = new_room_user(a.url), new_room_user(b.url)
    space = alice.create_room(preset="public_chat")
    rules = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
    initial_state = [{"type": "m.room.join_rules", "state_key": "", "content": rules}]
    room_id = alice.create_room(room_version="10", initial_state=initial_state)
    assert_error(bob.post(f"/_matrix/client/v3/join/{quote(room_id)}", {}, params={"via": a.server_name}), 403)
    join_via(bob, space, a.server_name)
    assert join_via(bob, room_id, a.server_name) == room_id
    member = ok(alice.room_get(room_id, f"state/m.room.member/{quote(bob.user_id)}"))
    assert member["join_authorised_via_users_server"] == alice.user_id


# -- the resident side refuses what it must ------------------------------------------------------------


def signed_request(
    origin: FederatingServer, target: FederatingServer, method: str, uri: str, body: Any = None
) -> requests.Response:
    """A request to `target`'s federation listener signed as `origin` (with its key file)."""
    header = sign_request(origin_key(origin), origin.server_name, target.server_name, method, uri, body)
    return requests.request(
        method, target.federation_url + uri, json=body, headers={"Authorization": header}, verify=False, timeout=30
    )


def origin_key(server: FederatingServer) -> Any:
    with (server.directory / "signing.key").open() as f:
        return read_signing_keys(f)[0]


def make_join_uri(room_id: str, user_id: str, versions: tuple[str, ...] = ("10", "11", "12")) -> str:
    query = "&".join(f"ver={v}" for v in versions)
    return f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote(user_id)}?{query}"


@pytest.fixture(scope="module")
def pair(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FederatingServer, FederatingServer]]:
    with (
        federating_server(backend, tmp_path_factory.mktemp(f"join-a-{backend}")) as a,
        federating_server(backend, tmp_path_factory.mktemp(f"join-b-{backend}")) as b,
    ):
        yield a, b


def test_make_join_names_the_room_version_the_joiner_lacks(pair: tuple[FederatingServer, FederatingServer]) -> None:
    a, b = pair
    room_id = new_room_user(a.url).create_room(preset="public_chat", room_version="10")
    answer = signed_request(b, a, "GET", make_join_uri(room_id, f"@bob:{b.server_name}", ("11", "12")))
    assert assert_error(answer, 400, "M_INCOMPATIBLE_ROOM_VERSION")["room_version"] == "10"


def test_make_join_refuses_users_of_other_servers_and_unknown_rooms(
    pair: tuple[FederatingServer, FederatingServer],
) -> None:
    a, b = pair
    room_id = new_room_user(a.url).create_room(preset="public_chat")
    assert_error(signed_request(b, a, "GET", make_join_uri(room_id, "@mallory:elsewhere.example")), 403, "M_FORBIDDEN")
    unknown = "!nosuchroom:" + a.server_name
    assert_error(signed_request(b, a, "GET", make_join_uri(unknown, f"@bob:{b.server_name}")), 404, "M_NOT_FOUND")


def test_send_join_refuses_a_tampered_event_and_joins_no_one(pair: tuple[FederatingServer, FederatingServer]) -> None:
    a, b = pair
    alice = new_room_user(a.url)
    room_id = alice.create_room(preset="public_chat")
    user_id = f"@bob:{b.server_name}"
    template = ok(signed_request(b, a, "GET", make_join_uri(room_id, user_id)))
    room_version = KNOWN_ROOM_VERSIONS[template["room_version"]]
    pdu = {**template["event"], "origin_server_ts": int(time.time() * 1000)}
    signed = add_hashes_and_signatures(room_version, pdu, b.server_name, origin_key(b))
    event_id = compute_event_id(room_version, signed)
    tampered = {**signed, "content": {"membership": "join", "displayname": "not what was signed"}}
    tampered["hashes"] = {"sha256": content_hash_base64(tampered)}  # a valid hash, but the signature breaks
    uri = f"/_matrix/federation/v2/send_join/{quote(room_id)}/{quote(compute_event_id(room_version, tampered))}"
    assert signed_request(b, a, "PUT", uri, tampered).status_code in (400, 403)
    assert membership(alice, room_id, user_id) is None
    # The untouched event is accepted: the resident server signs it and answers with the room's state.
    uri = f"/_matrix/federation/v2/send_join/{quote(room_id)}/{quote(event_id)}"
    answer = ok(signed_request(b, a, "PUT", uri, signed))
    assert a.server_name in answer["event"]["signatures"]
    assert {(e["type"], e.get("state_key")) for e in answer["state"]} >= {
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
    }
    assert answer["auth_chain"] and answer["members_omitted"] is False
    assert membership(alice, room_id, user_id) == "join"


def test_invite_of_a_user_of_another_server_is_refused(pair: tuple[FederatingServer, FederatingServer]) -> None:
    a, b = pair
    room_id = "!someroom:" + b.server_name
    uri = f"/_matrix/federation/v2/invite/{quote(room_id)}/{quote('$x')}"
    body = {"room_version": "10", "event": {"type": "m.room.member"}, "invite_room_state": []}
    assert signed_request(b, a, "PUT", uri, body).status_code == 400

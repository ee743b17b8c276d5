"""Typing, receipts and presence across servers, the room directory over federation, and a remote member's
join sent on by the room's resident server: against a real Synapse, and a second server of ours. Our
server runs on both backends; one Synapse serves the module."""

import itertools
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.client import RoomClient, assert_error, new_room_user, ok, quote
from tests.federation_servers import FederatingServer, federating_server
from tests.integration.test_federation_membership import (
    eventually,
    join_via,
    membership,
    sees_membership,
    sees_text,
)
from tests.synapse import SynapseProcess

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
_polls = itertools.count(10)


def sync(user: RoomClient) -> dict[str, Any]:
    """An initial sync. Synapse answers an identical sync request from a cache for two minutes, so every
    poll differs (in an inline filter's timeline limit)."""
    limit = json.dumps({"room": {"timeline": {"limit": next(_polls)}}})
    return ok(user.get("/_matrix/client/v3/sync", params={"timeout": 0, "filter": limit}))


def shared_room(ours: RoomClient, ours_server: FederatingServer, theirs: RoomClient, **create: Any) -> str:
    """A room of our server that the other server's user joined, with both ends seeing the join."""
    room_id = ours.create_room(preset="public_chat", **create)
    assert join_via(theirs, room_id, ours_server.server_name) == room_id
    eventually(sees_membership(theirs, room_id, ours.user_id, "join"), "our member at the other server")
    return room_id


def ephemeral(user: RoomClient, room_id: str, event_type: str) -> list[dict[str, Any]]:
    room = sync(user)["rooms"]["join"].get(room_id, {})
    return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == event_type]


def typing_users(user: RoomClient, room_id: str) -> list[str]:
    return [u for e in ephemeral(user, room_id, "m.typing") for u in e["content"]["user_ids"]]


def read_by(user: RoomClient, room_id: str, event_id: str) -> dict[str, Any]:
    """Who has an m.read receipt on `event_id`, as `user`'s sync shows."""
    found: dict[str, Any] = {}
    for e in ephemeral(user, room_id, "m.receipt"):
        found.update(e["content"].get(event_id, {}).get("m.read", {}))
    return found


def presence_of(user: RoomClient, other: str) -> dict[str, Any] | None:
    events = sync(user).get("presence", {}).get("events", [])
    return next((e["content"] for e in reversed(events) if e["sender"] == other), None)


def set_typing(user: RoomClient, room_id: str, typing: bool) -> None:
    ok(
        user.put(
            f"/_matrix/client/v3/rooms/{quote(room_id)}/typing/{quote(user.user_id)}",
            {"typing": typing, "timeout": 30000},
        )
    )


def send_receipt(user: RoomClient, room_id: str, event_id: str, receipt_type: str = "m.read") -> None:
    ok(user.post(f"/_matrix/client/v3/rooms/{quote(room_id)}/receipt/{receipt_type}/{quote(event_id)}", {}))


def set_presence(user: RoomClient, state: str, status_msg: str) -> None:
    body = {"presence": state, "status_msg": status_msg}
    ok(user.put(f"/_matrix/client/v3/presence/{quote(user.user_id)}/status", body))


# -- typing and receipts ---------------------------------------------------------------------------------


def test_typing_arrives_both_ways(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam = new_room_user(fed_server.url), synapse.register()
    room_id = shared_room(alice, fed_server, sam)
    set_typing(alice, room_id, True)
    eventually(lambda: alice.user_id in typing_users(sam, room_id), "our user typing at Synapse")
    set_typing(alice, room_id, False)
    eventually(lambda: alice.user_id not in typing_users(sam, room_id), "our user stopped typing at Synapse")
    set_typing(sam, room_id, True)
    eventually(lambda: sam.user_id in typing_users(alice, room_id), "the Synapse user typing at our server")


def test_read_receipts_arrive_both_ways(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam = new_room_user(fed_server.url), synapse.register()
    room_id = shared_room(alice, fed_server, sam)
    ours = alice.send_text(room_id, "read me, sam")
    eventually(sees_text(sam, room_id, "read me, sam"), "our message at Synapse")
    send_receipt(sam, room_id, ours)
    receipt = eventually(lambda: read_by(alice, room_id, ours).get(sam.user_id), "Synapse's receipt at our server")
    assert isinstance(receipt["ts"], int)
    theirs = ok(
        sam.put(
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/t1",
            {"msgtype": "m.text", "body": "read me, alice"},
        )
    )["event_id"]
    eventually(sees_text(alice, room_id, "read me, alice"), "Synapse's message at our server")
    send_receipt(alice, room_id, theirs)
    receipt = eventually(lambda: read_by(sam, room_id, theirs).get(alice.user_id), "our receipt at Synapse")
    assert isinstance(receipt["ts"], int)


def test_a_private_receipt_stays_on_our_server(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam = new_room_user(fed_server.url), synapse.register()
    room_id = shared_room(alice, fed_server, sam)
    first = ok(
        sam.put(
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/p1", {"msgtype": "m.text", "body": "one"}
        )
    )["event_id"]
    second = ok(
        sam.put(
            f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/p2", {"msgtype": "m.text", "body": "two"}
        )
    )["event_id"]
    eventually(sees_text(alice, room_id, "two"), "Synapse's messages at our server")
    send_receipt(alice, room_id, first, "m.read.private")
    send_receipt(alice, room_id, second)  # sent after the private one: once it is there, the other would be too
    eventually(lambda: alice.user_id in read_by(sam, room_id, second), "the public receipt at Synapse")
    assert alice.user_id not in read_by(sam, room_id, first)


# -- presence ----------------------------------------------------------------------------------------------


def test_presence_arrives_both_ways(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam = new_room_user(fed_server.url), synapse.register()
    shared_room(alice, fed_server, sam)
    status = f"ours {uuid.uuid4().hex[:6]}"
    set_presence(alice, "online", status)
    seen = eventually(
        lambda: (p := presence_of(sam, alice.user_id)) and p.get("status_msg") == status and p,
        "our presence at Synapse",
    )
    assert seen["presence"] == "online"
    status = f"theirs {uuid.uuid4().hex[:6]}"
    set_presence(sam, "unavailable", status)
    seen = eventually(
        lambda: (p := presence_of(alice, sam.user_id)) and p.get("status_msg") == status and p,
        "Synapse's presence at our server",
    )
    assert seen["presence"] == "unavailable"
    assert ok(alice.get(f"/_matrix/client/v3/presence/{quote(sam.user_id)}/status"))["status_msg"] == status


def test_presence_set_before_sharing_a_room_arrives_at_the_join(
    fed_server: FederatingServer, synapse: SynapseProcess
) -> None:
    alice, sam = new_room_user(fed_server.url), synapse.register()
    ours, theirs = f"ours {uuid.uuid4().hex[:6]}", f"theirs {uuid.uuid4().hex[:6]}"
    set_presence(alice, "online", ours)
    set_presence(sam, "online", theirs)
    shared_room(alice, fed_server, sam)
    eventually(
        lambda: (p := presence_of(sam, alice.user_id)) and p.get("status_msg") == ours, "our presence at Synapse"
    )
    eventually(
        lambda: (p := presence_of(alice, sam.user_id)) and p.get("status_msg") == theirs, "Synapse's presence here"
    )


def test_presence_disabled_sends_and_takes_nothing(backend: str, synapse: SynapseProcess, tmp_path: Path) -> None:
    with federating_server(backend, tmp_path, {"presence": {"enabled": False}}) as quiet:
        alice, sam = new_room_user(quiet.url), synapse.register()
        room_id = shared_room(alice, quiet, sam)
        set_presence(alice, "online", "not to be seen")
        set_presence(sam, "online", "not to be taken")
        alice.send_text(room_id, "after the presence")  # both servers have sent what they would by then
        sam_text = ok(
            sam.put(
                f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/q1",
                {"msgtype": "m.text", "body": "after theirs"},
            )
        )
        assert sam_text["event_id"]
        eventually(sees_text(sam, room_id, "after the presence"), "our message at Synapse")
        eventually(sees_text(alice, room_id, "after theirs"), "Synapse's message at our server")
        time.sleep(1)
        assert presence_of(alice, sam.user_id) is None
        theirs = ok(sam.get(f"/_matrix/client/v3/presence/{quote(alice.user_id)}/status"))
        assert theirs.get("status_msg") != "not to be seen"


# -- the room directory ----------------------------------------------------------------------------------


def public_room_ids(answer: dict[str, Any]) -> list[str]:
    return [entry["room_id"] for entry in answer["chunk"]]


def test_public_rooms_both_ways(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam = new_room_user(fed_server.url), synapse.register()
    name = f"dir {uuid.uuid4().hex[:8]}"
    ours = alice.create_room(preset="public_chat", visibility="public", name=name)
    theirs = sam.create_room(preset="public_chat", visibility="public", name=f"syn {name}")
    listed = ok(sam.get("/_matrix/client/v3/publicRooms", params={"server": fed_server.server_name}))
    assert ours in public_room_ids(listed)
    entry = next(e for e in listed["chunk"] if e["room_id"] == ours)
    assert entry["name"] == name and entry["num_joined_members"] == 1
    search = {"filter": {"generic_search_term": name}, "limit": 5}
    found = ok(sam.post("/_matrix/client/v3/publicRooms", search, params={"server": fed_server.server_name}))
    assert public_room_ids(found) == [ours]
    listed = ok(alice.get("/_matrix/client/v3/publicRooms", params={"server": synapse.server_name}))
    assert theirs in public_room_ids(listed)
    found = ok(
        alice.post(
            "/_matrix/client/v3/publicRooms",
            {"filter": {"generic_search_term": f"syn {name}"}},
            params={"server": synapse.server_name},
        )
    )
    assert public_room_ids(found) == [theirs]


def test_public_rooms_of_other_servers_page_through(fed_server: FederatingServer, synapse: SynapseProcess) -> None:
    alice, sam = new_room_user(fed_server.url), synapse.register()
    tag = uuid.uuid4().hex[:8]
    rooms = {alice.create_room(preset="public_chat", visibility="public", name=f"page {tag} {i}") for i in range(3)}
    seen: list[str] = []
    body: dict[str, Any] = {"filter": {"generic_search_term": f"page {tag}"}, "limit": 2}
    for _ in range(3):
        page = ok(sam.post("/_matrix/client/v3/publicRooms", body, params={"server": fed_server.server_name}))
        seen += public_room_ids(page)
        if "next_batch" not in page:
            break
        body["since"] = page["next_batch"]
    assert sorted(seen) == sorted(rooms)


def test_public_rooms_of_an_unreachable_or_invalid_server(fed_server: FederatingServer) -> None:
    alice = new_room_user(fed_server.url)
    assert_error(alice.get("/_matrix/client/v3/publicRooms", params={"server": "127.0.0.1:9"}), 502, "M_UNKNOWN")
    assert_error(alice.get("/_matrix/client/v3/publicRooms", params={"server": "bad server"}), 400, "M_INVALID_PARAM")


def test_federation_public_rooms_needs_a_signed_request(fed_server: FederatingServer) -> None:
    import requests

    answer = requests.get(fed_server.federation_url + "/_matrix/federation/v1/publicRooms", verify=False, timeout=30)
    assert_error(answer, 401, "M_UNAUTHORIZED")


# -- a remote join sent on by the resident server ---------------------------------------------------------


def test_a_third_server_sees_a_synapse_user_who_joined_our_room(
    backend: str, fed_server: FederatingServer, synapse: SynapseProcess, tmp_path: Path
) -> None:
    with federating_server(backend, tmp_path) as other:
        alice, bob, sam = new_room_user(fed_server.url), new_room_user(other.url), synapse.register()
        room_id = alice.create_room(preset="public_chat")
        assert join_via(bob, room_id, fed_server.server_name) == room_id
        # Synapse joins through us: only we can tell the second server of it.
        assert join_via(sam, room_id, fed_server.server_name) == room_id
        eventually(sees_membership(bob, room_id, sam.user_id, "join"), "the Synapse user's join at the third server")
        ok(
            sam.put(
                f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/x1",
                {"msgtype": "m.text", "body": "hi all"},
            )
        )
        eventually(sees_text(bob, room_id, "hi all"), "the Synapse user's message at the third server")
        sam.leave(room_id)
        eventually(sees_membership(bob, room_id, sam.user_id, "leave"), "the Synapse user's leave at the third server")


def test_synapse_sees_a_user_of_a_third_server_who_joined_our_room(
    backend: str, fed_server: FederatingServer, synapse: SynapseProcess, tmp_path: Path
) -> None:
    with federating_server(backend, tmp_path) as other:
        alice, bob, sam = new_room_user(fed_server.url), new_room_user(other.url), synapse.register()
        room_id = alice.create_room(preset="public_chat")
        assert join_via(sam, room_id, fed_server.server_name) == room_id
        # Both we (as the resident server) and bob's server (its own join) send the join to Synapse.
        assert join_via(bob, room_id, fed_server.server_name) == room_id
        eventually(sees_membership(sam, room_id, bob.user_id, "join"), "the third server's user at Synapse")
        assert membership(alice, room_id, bob.user_id) == "join"

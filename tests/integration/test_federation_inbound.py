"""Receiving events over federation: a remote server (played by the test, with its own signing key served
over HTTPS) joins a room of ours and sends events; our clients see what the spec says they should."""

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from signedjson.key import generate_signing_key

from homeserver.core.event_builder import build_event
from homeserver.core.events import Event
from homeserver.core.room_versions import KNOWN_ROOM_VERSIONS
from tests.client import RoomClient, new_room_user, ok, quote
from tests.federation_servers import FederatingServer
from tests.scripted_peer import ScriptedPeer

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
V10 = KNOWN_ROOM_VERSIONS["10"]
FED = "/_matrix/federation/v1"


@pytest.fixture(scope="module")
def peer(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedPeer]:
    with ScriptedPeer(tmp_path_factory.mktemp(f"peer-{backend}")) as p:
        yield p


@pytest.fixture(scope="module")
def alice(fed_server: FederatingServer) -> RoomClient:
    return new_room_user(fed_server.url)


@dataclass
class Room:
    room_id: str
    server: FederatingServer
    peer: ScriptedPeer
    alice: RoomClient

    def state(self) -> dict[tuple[str, str], str]:
        events = ok(self.alice.room_get(self.room_id, "state"))
        return {(e["type"], e["state_key"]): e["event_id"] for e in events}

    def timeline(self, limit: int = 20) -> list[dict[str, Any]]:
        return ok(self.alice.room_get(self.room_id, "messages", dir="b", limit=limit))["chunk"]

    def latest(self) -> str:
        return self.timeline(1)[0]["event_id"]

    def depth_of(self, event_id: str) -> int:
        if event_id not in self.peer.events:
            pdu = ok(self.peer.request(self.server, "GET", f"{FED}/event/{quote(event_id)}"))["pdus"][0]
            self.peer.learn(V10, pdu)
        return self.peer.events[event_id].depth

    def event(
        self, sender: str, event_type: str, content: dict, state_key: str | None = None, prev: list[str] | None = None
    ) -> Event:
        """An event of a peer user, built on the room's latest event (or `prev`) and current state."""
        state = self.state()
        keys = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", sender)]
        if event_type == "m.room.member":
            keys.append(("m.room.join_rules", ""))
        prev = prev or [self.latest()]
        depth = max(self.depth_of(p) for p in prev) + 1
        auth = [state[k] for k in keys if k in state]
        return self.peer.build(V10, self.room_id, sender, event_type, content, prev, auth, depth, state_key)

    def send(self, *events: Event | dict, edus: list[dict] | None = None, txn_id: str | None = None) -> dict:
        pdus = [e.get_pdu_json() if isinstance(e, Event) else e for e in events]
        return ok(self.peer.send(self.server, txn_id or uuid.uuid4().hex, pdus, edus))["pdus"]

    def join(self, localpart: str) -> str:
        user_id = self.peer.user(localpart)
        join = self.event(user_id, "m.room.member", {"membership": "join"}, state_key=user_id)
        assert self.send(join) == {join.event_id: {}}
        return user_id


@pytest.fixture(scope="module")
def room(fed_server: FederatingServer, peer: ScriptedPeer, alice: RoomClient) -> Room:
    room_id = alice.create_room(preset="public_chat", room_version="10")
    r = Room(room_id, fed_server, peer, alice)
    bob = peer.user("bob")
    # Before the join the peer may not read our room's history: it guesses a depth above the room's.
    state = r.state()
    auth = [state[("m.room.create", "")], state[("m.room.power_levels", "")], state[("m.room.join_rules", "")]]
    join = peer.build(V10, room_id, bob, "m.room.member", {"membership": "join"}, [r.latest()], auth, 50, bob)
    assert r.send(join) == {join.event_id: {}}
    return r


def bodies(room: Room) -> list[str]:
    return [e["content"].get("body") for e in room.timeline() if e["type"] == "m.room.message"]


def test_remote_join_and_message_reach_local_clients(room: Room) -> None:
    bob = room.peer.user("bob")
    assert room.state()[("m.room.member", bob)]
    message = room.event(bob, "m.room.message", {"msgtype": "m.text", "body": "hello from afar"})
    assert room.send(message) == {message.event_id: {}}
    assert room.timeline(1)[0]["event_id"] == message.event_id
    assert "hello from afar" in bodies(room)


def test_event_signed_with_an_unknown_key_is_dropped(room: Room) -> None:
    bob = room.peer.user("bob")
    good = room.event(bob, "m.room.message", {"msgtype": "m.text", "body": "forged"})
    forged = build_event(
        V10,
        room.peer.server_name,
        generate_signing_key("forged"),
        event_type="m.room.message",
        sender=bob,
        content={"msgtype": "m.text", "body": "forged"},
        room_id=room.room_id,
        prev_event_ids=list(good.prev_event_ids),
        auth_event_ids=list(good.auth_event_ids),
        depth=good.depth,
        origin_server_ts=good.origin_server_ts,
    )
    result = room.send(forged)
    assert "error" in result[forged.event_id]
    assert "forged" not in bodies(room)


def test_content_hash_mismatch_keeps_only_the_redacted_event(room: Room) -> None:
    bob = room.peer.user("bob")
    message = room.event(bob, "m.room.message", {"msgtype": "m.text", "body": "original"})
    tampered = message.get_pdu_json()
    tampered["content"]["body"] = "tampered in transit"  # the id and signature cover only the redacted form
    assert room.send(tampered) == {message.event_id: {}}
    stored = next(e for e in room.timeline() if e["event_id"] == message.event_id)
    assert stored["content"] == {}


def test_unauthorised_event_is_rejected_and_changes_nothing(room: Room) -> None:
    bob = room.peer.user("bob")
    before = room.state()
    grab = room.event(bob, "m.room.power_levels", {"users": {bob: 100}}, state_key="")
    result = room.send(grab)
    assert "Rejected" in result[grab.event_id]["error"]
    assert room.state() == before
    assert grab.event_id not in [e["event_id"] for e in room.timeline()]
    response = room.peer.request(room.server, "GET", f"{FED}/event/{quote(grab.event_id)}")
    assert response.status_code == 404


def test_missing_prev_events_are_fetched_from_the_sender(room: Room) -> None:
    bob = room.peer.user("bob")
    m1 = room.event(bob, "m.room.message", {"msgtype": "m.text", "body": "one"})
    m2 = room.event(bob, "m.room.message", {"msgtype": "m.text", "body": "two"}, prev=[m1.event_id])
    m3 = room.event(bob, "m.room.message", {"msgtype": "m.text", "body": "three"}, prev=[m2.event_id])
    assert room.send(m3) == {m3.event_id: {}}
    assert bodies(room)[:3] == ["three", "two", "one"]
    assert any(path.startswith(f"{FED}/get_missing_events/") for _, path in room.peer.requests)


def test_gap_left_by_missing_events_is_bridged_with_the_state_at_it(room: Room) -> None:
    bob = room.peer.user("bob")
    state_ids = sorted(room.state().values())
    rename = room.event(bob, "m.room.member", {"membership": "join", "displayname": "Bob B"}, state_key=bob)
    room.peer.state_before[rename.event_id] = state_ids
    after = room.event(bob, "m.room.message", {"msgtype": "m.text", "body": "after the gap"}, prev=[rename.event_id])
    room.peer.serve_missing = False
    try:
        assert room.send(after) == {after.event_id: {}}
    finally:
        room.peer.serve_missing = True
    assert "after the gap" in bodies(room)
    served = ok(
        room.peer.request(room.server, "GET", f"{FED}/state_ids/{quote(room.room_id)}?event_id={quote(after.event_id)}")
    )
    assert rename.event_id in served["pdu_ids"]  # the state before the new event came from the peer
    assert ("GET", f"{FED}/event/{quote(rename.event_id)}") in room.peer.requests or any(
        path.endswith(rename.event_id) or path.endswith(quote(rename.event_id)) for _, path in room.peer.requests
    )


def test_event_allowed_by_its_past_but_not_the_present_is_soft_failed(room: Room) -> None:
    carol = room.join("carol")
    before_kick = room.latest()
    ok(room.alice.post(f"/_matrix/client/v3/rooms/{quote(room.room_id)}/kick", {"user_id": carol}))
    assert room.state()[("m.room.member", carol)]
    state = room.state()
    carol_join = room.peer.events[next(e for e in room.peer.events if room.peer.events[e].state_key == carol)]
    auth = [state[("m.room.create", "")], state[("m.room.power_levels", "")], carol_join.event_id]
    depth = room.depth_of(before_kick) + 1
    late = room.peer.build(
        V10,
        room.room_id,
        carol,
        "m.room.message",
        {"msgtype": "m.text", "body": "too late"},
        [before_kick],
        auth,
        depth,
    )
    assert room.send(late) == {late.event_id: {}}  # accepted: it was allowed where it was sent
    assert "too late" not in bodies(room)  # but our clients never see it


def test_retried_transaction_gets_the_first_answer(room: Room) -> None:
    bob = room.peer.user("bob")
    first = room.event(bob, "m.room.message", {"msgtype": "m.text", "body": "once"})
    txn_id = uuid.uuid4().hex
    assert room.send(first, txn_id=txn_id) == {first.event_id: {}}
    extra = room.event(bob, "m.room.message", {"msgtype": "m.text", "body": "sneaked in"})
    assert room.send(first, extra, txn_id=txn_id) == {first.event_id: {}}
    assert "sneaked in" not in bodies(room)
    assert bodies(room).count("once") == 1


def test_too_many_pdus_is_refused(room: Room) -> None:
    response = room.peer.send(room.server, uuid.uuid4().hex, [{}] * 51)
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_BAD_JSON"


def test_typing_of_a_remote_member_reaches_local_clients(room: Room) -> None:
    bob = room.peer.user("bob")
    edu = {"edu_type": "m.typing", "content": {"room_id": room.room_id, "user_id": bob, "typing": True}}
    impostor = {"edu_type": "m.typing", "content": {"room_id": room.room_id, "user_id": "@x:elsewhere", "typing": True}}
    room.send(edus=[edu, impostor])
    deadline = time.time() + 10
    while True:
        sync = ok(room.alice.get("/_matrix/client/v3/sync", params={"timeout": 0}))
        ephemeral = sync["rooms"]["join"][room.room_id]["ephemeral"]["events"]
        typing = [e["content"]["user_ids"] for e in ephemeral if e["type"] == "m.typing"]
        if typing and bob in typing[0] or time.time() > deadline:
            break
        time.sleep(0.2)
    assert typing and typing[0] == [bob]


def test_history_is_served_to_a_server_in_the_room(room: Room) -> None:
    peer, server, room_id = room.peer, room.server, quote(room.room_id)
    latest = room.latest()
    event = ok(peer.request(server, "GET", f"{FED}/event/{quote(latest)}"))
    assert event["pdus"][0]["room_id"] == room.room_id
    state = ok(peer.request(server, "GET", f"{FED}/state/{room_id}?event_id={quote(latest)}"))
    assert {p["type"] for p in state["pdus"]} >= {"m.room.create", "m.room.power_levels", "m.room.member"}
    assert any(p["type"] == "m.room.create" for p in state["auth_chain"])
    auth = ok(peer.request(server, "GET", f"{FED}/event_auth/{room_id}/{quote(latest)}"))
    assert any(p["type"] == "m.room.create" for p in auth["auth_chain"])
    backfill = ok(peer.request(server, "GET", f"{FED}/backfill/{room_id}?v={quote(latest)}&limit=5"))
    assert len(backfill["pdus"]) == 5
    assert backfill["pdus"][0]["depth"] >= backfill["pdus"][-1]["depth"]
    ids = [Event.from_pdu(V10, pdu).event_id for pdu in backfill["pdus"]]
    assert ids[0] == latest
    body = {"earliest_events": [ids[-1]], "latest_events": [latest], "limit": 10}
    missing = ok(peer.request(server, "POST", f"{FED}/get_missing_events/{room_id}", body))["events"]
    missing_ids = [Event.from_pdu(V10, pdu).event_id for pdu in missing]
    assert set(missing_ids) <= set(ids[1:-1]) and missing_ids  # between the two, both left out
    assert [e["depth"] for e in missing] == sorted(e["depth"] for e in missing)


def test_history_is_refused_to_a_server_not_in_the_room(room: Room, tmp_path: Path) -> None:
    with ScriptedPeer(tmp_path) as stranger:
        for method, uri in [
            ("GET", f"{FED}/event/{quote(room.latest())}"),
            ("GET", f"{FED}/state_ids/{quote(room.room_id)}?event_id={quote(room.latest())}"),
            ("GET", f"{FED}/backfill/{quote(room.room_id)}?v={quote(room.latest())}&limit=5"),
        ]:
            response = stranger.request(room.server, method, uri)
            assert response.status_code == 403, uri
            assert response.json()["errcode"] == "M_FORBIDDEN"


def _sync_until(client: RoomClient, found: Any, since: str | None = None) -> dict[str, Any]:
    """Sync onwards from `since` until `found(body)` is truthy for a response (at most 10 s): the body
    that matched, or the last one. Each request names a new `since`, so none is a kept earlier answer."""
    deadline = time.time() + 10
    since = since or _token(client)
    while True:
        body = ok(client.get("/_matrix/client/v3/sync", params={"timeout": 2000, "since": since}))
        if found(body) or time.time() > deadline:
            return body
        since = body["next_batch"]


def _token(client: RoomClient) -> str:
    return ok(client.get("/_matrix/client/v3/sync", params={"timeout": 0}))["next_batch"]


def test_read_receipt_of_a_remote_member_reaches_local_clients(room: Room) -> None:
    bob = room.peer.user("bob")
    latest = room.latest()
    since = _token(room.alice)
    receipt = {"m.read": {bob: {"event_ids": [latest], "data": {"ts": 1}}}}
    room.send(edus=[{"edu_type": "m.receipt", "content": {room.room_id: receipt}}])

    def read_by_bob(body: dict[str, Any]) -> bool:
        events = body["rooms"]["join"].get(room.room_id, {}).get("ephemeral", {}).get("events", [])
        return any(bob in e["content"].get(latest, {}).get("m.read", {}) for e in events if e["type"] == "m.receipt")

    assert read_by_bob(_sync_until(room.alice, read_by_bob, since))


def test_to_device_message_from_a_remote_user_is_delivered_once(room: Room) -> None:
    bob = room.peer.user("bob")
    alice = room.alice
    device_id = ok(alice.get("/_matrix/client/v3/account/whoami"))["device_id"]
    since = _token(alice)
    content = {
        "sender": bob,
        "type": "m.test",
        "message_id": uuid.uuid4().hex,
        "messages": {alice.user_id: {device_id: {"hello": "alice"}}, "@x:elsewhere": {"*": {"no": 1}}},
    }
    edu = {"edu_type": "m.direct_to_device", "content": content}
    room.send(edus=[edu])
    room.send(edus=[edu])  # a resent EDU (same message id) is not delivered twice
    body = _sync_until(alice, lambda b: b.get("to_device", {}).get("events"), since)
    assert body["to_device"]["events"] == [{"type": "m.test", "sender": bob, "content": {"hello": "alice"}}]


def test_device_list_update_marks_the_remote_user_changed(room: Room) -> None:
    bob = room.peer.user("bob")
    since = _token(room.alice)
    edu = {"edu_type": "m.device_list_update", "content": {"user_id": bob, "device_id": "D", "stream_id": 1}}
    room.send(edus=[edu])
    body = _sync_until(room.alice, lambda b: bob in b.get("device_lists", {}).get("changed", []), since)
    assert bob in body["device_lists"]["changed"]

"""Initial syncs share a room's sections between clients, and each client still gets its own answer: unread
counts, private receipts, room account data, heroes, ages, and the timeline its history visibility allows."""

import time
from typing import Any

import pytest
import requests

from tests.client import RoomClient, new_room_user, ok, quote
from tests.integration.test_room_reads import redact
from tests.integration.test_sync import joined, sync, timeline_ids
from tests.integration.test_visibility import room_with_visibility
from tests.server import ServerProcess


def sections_built(server: ServerProcess) -> int:
    return requests.get(server.url + "/health", timeout=10).json()["sync"]["room_sections_built"]


def receipt(client: RoomClient, room: str, event_id: str, kind: str) -> None:
    ok(client.post(f"/_matrix/client/v3/rooms/{quote(room)}/receipt/{kind}/{quote(event_id)}", {}))


def room_data(client: RoomClient, room: str, content: dict[str, Any]) -> None:
    ok(client.put(f"/_matrix/client/v3/user/{quote(client.user_id)}/rooms/{quote(room)}/account_data/org.x", content))


def ephemeral(section: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((e["content"] for e in section["ephemeral"]["events"] if e["type"] == kind), {})


def without_ages(value: Any) -> Any:
    """The value with every `unsigned.age` taken out: ages are the answer's own moment."""
    if isinstance(value, list):
        return [without_ages(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: without_ages(v) for k, v in value.items()}
    if isinstance(out.get("unsigned"), dict):
        out["unsigned"] = {k: v for k, v in out["unsigned"].items() if k != "age"}
    return out


def test_members_of_a_shared_room_each_get_their_own_parts(
    server: ServerProcess, alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = alice.create_room(preset="public_chat")  # no name: the summary names heroes
    bob.join(room)
    carol.join(room)
    sent = [alice.send_text(room, f"m{n}") for n in range(3)]
    receipt(bob, room, sent[1], "m.read.private")
    receipt(carol, room, sent[2], "m.read")
    room_data(bob, room, {"who": "bob"})
    room_data(carol, room, {"who": "carol"})

    bob_section = joined(sync(bob), room)
    built = sections_built(server)
    carol_section = joined(sync(carol), room)
    assert sections_built(server) == built  # carol's answer came from the sections built for bob's

    assert bob_section["unread_notifications"]["notification_count"] == 1  # m2, after his private receipt
    assert carol_section["unread_notifications"]["notification_count"] == 0
    bob_receipts, carol_receipts = ephemeral(bob_section, "m.receipt"), ephemeral(carol_section, "m.receipt")
    assert list(bob_receipts[sent[1]]["m.read.private"]) == [bob.user_id]
    assert sent[1] not in carol_receipts  # bob's private receipt is his alone
    assert carol.user_id in bob_receipts[sent[2]]["m.read"] and carol.user_id in carol_receipts[sent[2]]["m.read"]
    assert bob_section["account_data"]["events"] == [{"type": "org.x", "content": {"who": "bob"}}]
    assert carol_section["account_data"]["events"] == [{"type": "org.x", "content": {"who": "carol"}}]
    assert set(bob_section["summary"]["m.heroes"]) == {alice.user_id, carol.user_id}
    assert set(carol_section["summary"]["m.heroes"]) == {alice.user_id, bob.user_id}
    assert timeline_ids(bob_section) == timeline_ids(carol_section)


def test_a_shared_timeline_carries_each_answers_own_ages(server: ServerProcess, alice: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob, carol = new_room_user(server.url), new_room_user(server.url)
    bob.join(room)
    carol.join(room)
    message = alice.send_text(room, "how old am I")
    redaction = redact(alice, room, alice.send_text(room, "oops"), "mistake")

    def ages(client: RoomClient) -> tuple[int, int]:
        events = {e["event_id"]: e for e in joined(sync(client), room)["timeline"]["events"]}
        redacted = next(e for e in events.values() if e["unsigned"].get("redacted_because"))
        assert redacted["unsigned"]["redacted_because"]["event_id"] == redaction
        return events[message]["unsigned"]["age"], redacted["unsigned"]["redacted_because"]["unsigned"]["age"]

    first = ages(bob)
    built = sections_built(server)
    time.sleep(0.3)
    second = ages(carol)
    assert sections_built(server) == built
    assert second[0] >= first[0] + 250 and second[1] >= first[1] + 250


def test_history_visibility_still_hides_what_a_later_member_may_not_see(
    server: ServerProcess, alice: RoomClient, bob: RoomClient
) -> None:
    room = room_with_visibility(alice, "joined")
    before = alice.send_text(room, "before bob")
    bob.join(room)
    after = alice.send_text(room, "after bob")
    alice_ids, bob_ids = timeline_ids(joined(sync(alice), room)), timeline_ids(joined(sync(bob), room))
    assert before in alice_ids and after in alice_ids
    assert before not in bob_ids and after in bob_ids


FILTERS = {
    "none": None,
    "lazy": {"room": {"state": {"lazy_load_members": True}}},
    "short": {"room": {"timeline": {"limit": 2}}},
    "types": {"room": {"timeline": {"types": ["m.room.message"]}, "state": {"types": ["m.room.name"]}}},
    "fields": {"event_fields": ["type", "content.body", "unsigned"]},
    "federation": {"event_format": "federation"},
}


@pytest.mark.parametrize("visibility", ["shared", "joined"])
@pytest.mark.parametrize("name", list(FILTERS))
def test_an_initial_sync_shows_what_a_full_state_sync_does(
    server: ServerProcess, alice: RoomClient, bob: RoomClient, name: str, visibility: str
) -> None:
    """The shared sections against the general path that builds a room for one user (a full_state sync)."""
    room = room_with_visibility(alice, visibility)
    alice.send_text(room, "before bob")
    bob.join(room)
    alice.send_state(room, "m.room.name", {"name": "compared"})
    redact(alice, room, alice.send_text(room, "gone"), "no")
    for n in range(3):
        alice.send_text(room, f"after {n}")
    for user in (alice, bob):
        params = {"filter": FILTERS[name]} if FILTERS[name] else {}
        initial = sync(user, **params)
        full = sync(user, initial["next_batch"], full_state="true", **params)
        a, b = joined(initial, room), joined(full, room)
        for part in ("timeline", "state", "summary", "unread_notifications"):
            assert without_ages(a[part]) == without_ages(b[part]), part

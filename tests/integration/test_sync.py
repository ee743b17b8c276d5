"""/sync through the real server: initial and incremental, limited timelines, lazy members, long-polls."""

import concurrent.futures
import json
import threading
import time
from typing import Any

import requests

from tests.client import Client, RoomClient, new_room_user, ok, quote
from tests.server import ServerProcess

SYNC = "/_matrix/client/v3/sync"


def sync(client: Client, since: str | None = None, **params: Any) -> dict[str, Any]:
    if since:
        params["since"] = since
    if isinstance(params.get("filter"), dict):
        params["filter"] = json.dumps(params["filter"])
    response = client.get(SYNC, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def joined(body: dict[str, Any], room_id: str) -> dict[str, Any]:
    return body["rooms"]["join"][room_id]


def timeline_ids(section: dict[str, Any]) -> list[str]:
    return [e["event_id"] for e in section["timeline"]["events"]]


def test_initial_sync_shows_the_room_with_its_timeline(alice: RoomClient) -> None:
    room = alice.create_room(name="first")
    last = alice.send_text(room, "hello")
    body = sync(alice)
    section = joined(body, room)
    assert timeline_ids(section)[-1] == last
    assert body["next_batch"].startswith("s")
    assert section["summary"]["m.joined_member_count"] == 1


def test_incremental_sync_returns_exactly_the_new_events(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    token = sync(bob)["next_batch"]
    sent = [alice.send_text(room, f"m{n}") for n in range(3)]
    body = sync(bob, token)
    section = joined(body, room)
    assert timeline_ids(section) == sent
    assert section["timeline"]["limited"] is False
    assert section["state"]["events"] == []
    # Nothing new: the room is left out.
    assert room not in sync(bob, body["next_batch"])["rooms"]["join"]


def test_limited_incremental_sync_sends_only_the_state_that_changed(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    token = sync(bob)["next_batch"]
    topic = alice.send_state(room, "m.room.topic", {"topic": "new topic"})
    for n in range(15):
        alice.send_text(room, f"m{n}")
    section = joined(sync(bob, token, filter={"room": {"timeline": {"limit": 5}}}), room)
    assert section["timeline"]["limited"] is True
    assert len(section["timeline"]["events"]) == 5
    assert [e["event_id"] for e in section["state"]["events"]] == [topic]


def test_limited_timeline_meets_messages_without_gaps_or_repeats(alice: RoomClient) -> None:
    room = alice.create_room()
    sent = [alice.send_text(room, f"m{n}") for n in range(30)]
    section = joined(sync(alice, filter={"room": {"timeline": {"limit": 7}}}), room)
    seen = timeline_ids(section)
    token = section["timeline"]["prev_batch"]
    while True:
        page = alice.room_get(room, "messages", dir="b", limit=6, **{"from": token}).json()
        seen = [e["event_id"] for e in reversed(page["chunk"])] + seen
        if "end" not in page:
            break
        token = page["end"]
    assert seen[-30:] == sent
    assert len(seen) == len(set(seen))


def test_lazy_loading_sends_only_the_senders_members(alice: RoomClient, server: ServerProcess) -> None:
    room = alice.create_room(preset="public_chat")
    others = [new_room_user(server.url) for _ in range(4)]
    for other in others:
        other.join(room)
    for n in range(12):
        alice.send_text(room, f"m{n}")
    others[0].send_text(room, "from zero")
    lazy = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 3}}}
    section = joined(sync(alice, filter=lazy), room)
    members = {e["state_key"] for e in section["state"]["events"] if e["type"] == "m.room.member"}
    assert members == {alice.user_id, others[0].user_id}
    full = joined(sync(alice, filter={"room": {"timeline": {"limit": 3}}}), room)
    all_members = {e["state_key"] for e in full["state"]["events"] if e["type"] == "m.room.member"}
    assert all_members == {alice.user_id, *(o.user_id for o in others)}


def test_long_poll_wakes_on_a_new_event(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    token = sync(bob)["next_batch"]
    timer = threading.Timer(0.5, alice.send_text, (room, "wake up"))
    timer.start()
    started = time.monotonic()
    body = sync(bob, token, timeout=20000)
    assert time.monotonic() - started < 10
    assert [e["content"]["body"] for e in joined(body, room)["timeline"]["events"]] == ["wake up"]
    timer.join()


def test_long_poll_returns_at_the_deadline_with_an_unchanged_token(alice: RoomClient) -> None:
    token = sync(alice)["next_batch"]
    started = time.monotonic()
    body = sync(alice, token, timeout=700)
    assert 0.6 <= time.monotonic() - started < 5
    assert body["next_batch"] == token
    assert body["rooms"]["join"] == {}


def test_invites_and_leaves_appear_in_their_sections(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(name="invite only")
    token = sync(bob)["next_batch"]
    alice.invite(room, bob.user_id)
    body = sync(bob, token)
    stripped = body["rooms"]["invite"][room]["invite_state"]["events"]
    assert {"m.room.name", "m.room.member"} <= {e["type"] for e in stripped}
    bob.join(room)
    token = sync(bob, body["next_batch"])["next_batch"]
    bob.leave(room)
    left = sync(bob, token)["rooms"]["leave"][room]
    assert left["timeline"]["events"][-1]["content"]["membership"] == "leave"


def test_bad_tokens_and_parameters_are_clear_errors(alice: RoomClient) -> None:
    for params in (
        {"since": "nonsense"},
        {"since": "s1_2"},
        {"timeout": "soon"},
        {"full_state": "maybe"},
        {"filter": "{not json"},
        {"filter": "12345"},
    ):
        response = alice.get(SYNC, params=params)
        assert response.status_code in (400, 404), (params, response.text)
        assert response.json()["errcode"] in ("M_INVALID_PARAM", "M_NOT_FOUND", "M_BAD_JSON")


def test_uploaded_filter_is_used_by_sync(alice: RoomClient) -> None:
    path = f"/_matrix/client/v3/user/{quote(alice.user_id)}/filter"
    filter_id = alice.post(path, {"room": {"timeline": {"limit": 2}}}).json()["filter_id"]
    assert alice.get(f"{path}/{filter_id}").json() == {"room": {"timeline": {"limit": 2}}}
    room = alice.create_room()
    for n in range(5):
        alice.send_text(room, f"m{n}")
    assert len(joined(sync(alice, filter=filter_id), room)["timeline"]["events"]) == 2


def test_gzip_when_the_client_accepts_it(alice: RoomClient) -> None:
    room = alice.create_room(name="x" * 2000)
    response = requests.get(
        alice.base_url + SYNC,
        headers={"Authorization": f"Bearer {alice.access_token}", "Accept-Encoding": "gzip"},
        timeout=30,
    )
    assert response.headers.get("Content-Encoding") == "gzip"
    assert room in response.json()["rooms"]["join"]


def test_concurrent_identical_full_syncs_build_the_room_state_once(server: ServerProcess) -> None:
    owner = new_room_user(server.url)
    room = owner.create_room(preset="public_chat")
    users = [new_room_user(server.url) for _ in range(50)]
    for user in users:
        user.join(room)
    for n in range(12):  # the state of the room then lies before the timeline
        owner.send_text(room, f"m{n}")
    before = requests.get(server.url + "/health", timeout=10).json()["sync"]

    def full_sync(client: Client) -> dict:
        return sync(client)

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        # 50 different users: shared through the room state cache.
        bodies = list(pool.map(full_sync, users))
        # One user 50 times at once: shared through single-flight.
        same = list(pool.map(full_sync, [owner] * 50))
    after = requests.get(server.url + "/health", timeout=10).json()["sync"]
    assert all(len(joined(b, room)["state"]["events"]) >= 51 for b in bodies + same)
    assert after["room_states_built"] - before["room_states_built"] == 1
    assert after["computed"] - before["computed"] <= 51  # 50 users + the owner's one computation
    assert after["coalesced"] - before["coalesced"] >= 49


def test_typing_receipts_and_account_data_arrive_through_sync(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    event = alice.send_text(room, "read me")
    token = sync(bob)["next_batch"]
    ok = alice.put(
        f"/_matrix/client/v3/rooms/{quote(room)}/typing/{quote(alice.user_id)}", {"typing": True, "timeout": 10000}
    )
    assert ok.status_code == 200
    body = sync(bob, token, timeout=5000)
    ephemeral = {e["type"]: e["content"] for e in joined(body, room)["ephemeral"]["events"]}
    assert ephemeral["m.typing"]["user_ids"] == [alice.user_id]

    assert alice.post(f"/_matrix/client/v3/rooms/{quote(room)}/receipt/m.read/{quote(event)}", {}).status_code == 200
    body = sync(bob, body["next_batch"], timeout=5000)
    receipts = [e["content"] for e in joined(body, room)["ephemeral"]["events"] if e["type"] == "m.receipt"]
    assert alice.user_id in receipts[0][event]["m.read"]

    data_path = f"/_matrix/client/v3/user/{quote(bob.user_id)}/account_data/org.example.settings"
    assert bob.put(data_path, {"dark": True}).status_code == 200
    body = sync(bob, body["next_batch"], timeout=5000)
    assert {"type": "org.example.settings", "content": {"dark": True}} in body["account_data"]["events"]


def test_long_poll_wakes_on_typing(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    token = sync(bob)["next_batch"]
    path = f"/_matrix/client/v3/rooms/{quote(room)}/typing/{quote(alice.user_id)}"
    timer = threading.Timer(0.5, alice.put, (path, {"typing": True, "timeout": 10000}))
    timer.start()
    started = time.monotonic()
    body = sync(bob, token, timeout=20000)
    assert time.monotonic() - started < 10
    assert joined(body, room)["ephemeral"]["events"][0]["content"]["user_ids"] == [alice.user_id]
    timer.join()


def test_to_device_messages_are_delivered_until_acknowledged_then_never_again(
    alice: RoomClient, bob: RoomClient
) -> None:
    token = sync(bob)["next_batch"]
    path = "/_matrix/client/v3/sendToDevice/org.example.ping/txn1"
    body = {"messages": {bob.user_id: {bob.device_id: {"n": 1}}}}
    assert alice.put(path, body).status_code == 200
    first = sync(bob, token, timeout=5000)
    assert [e["content"] for e in first["to_device"]["events"]] == [{"n": 1}]
    assert first["to_device"]["events"][0]["sender"] == alice.user_id
    # A retry of the same sync (the answer was lost) gets the message again.
    assert [e["content"] for e in sync(bob, token)["to_device"]["events"]] == [{"n": 1}]
    # Syncing on from the new token acknowledges it: gone for good.
    assert sync(bob, first["next_batch"])["to_device"]["events"] == []
    assert sync(bob, token)["to_device"]["events"] == []


def test_device_list_changes_of_room_mates_appear(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    token = sync(alice)["next_batch"]
    keys = {
        "device_keys": {
            "user_id": bob.user_id,
            "device_id": bob.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{bob.device_id}": "a" * 43, f"ed25519:{bob.device_id}": "b" * 43},
            "signatures": {bob.user_id: {f"ed25519:{bob.device_id}": "c" * 86}},
        }
    }
    assert bob.post("/_matrix/client/v3/keys/upload", keys).status_code == 200
    body = sync(alice, token, timeout=5000)
    assert bob.user_id in body["device_lists"]["changed"]
    bob.leave(room)
    assert bob.user_id in sync(alice, body["next_batch"], timeout=5000)["device_lists"]["left"]


def test_full_state_sends_the_whole_state_again(alice: RoomClient) -> None:
    room = alice.create_room(name="whole")
    for n in range(12):
        alice.send_text(room, f"m{n}")
    token = sync(alice)["next_batch"]
    alice.send_text(room, "one more")
    incremental = joined(sync(alice, token), room)
    assert incremental["state"]["events"] == []
    full = joined(sync(alice, token, full_state="true"), room)
    assert {"m.room.create", "m.room.name", "m.room.member"} <= {e["type"] for e in full["state"]["events"]}


def test_include_leave_brings_left_rooms_into_an_initial_sync(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    bob.leave(room)
    assert room not in sync(bob)["rooms"]["leave"]
    left = sync(bob, filter={"room": {"include_leave": True}})["rooms"]["leave"][room]
    assert left["timeline"]["events"][-1]["content"]["membership"] == "leave"
    # After leaving, what others say is not delivered.
    token = sync(bob)["next_batch"]
    alice.send_text(room, "bob is gone")
    assert room not in sync(bob, token)["rooms"]["join"]


def unread(client: RoomClient, room: str, since: str | None = None) -> dict[str, int]:
    return joined(sync(client, since), room)["unread_notifications"]


def test_unread_counts_rise_highlight_on_mentions_and_zero_on_a_receipt(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    alice.send_text(room, "one")
    alice.send_text(room, "two")
    mention = {"msgtype": "m.text", "body": "hey bob", "m.mentions": {"user_ids": [bob.user_id]}}
    mentioned = ok(alice.put(f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/mention1", mention))
    notice = {"msgtype": "m.notice", "body": "a bot speaks"}
    ok(alice.put(f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/notice1", notice))
    assert unread(bob, room) == {"notification_count": 3, "highlight_count": 1}
    assert unread(alice, room) == {"notification_count": 0, "highlight_count": 0}  # her own messages
    token = sync(bob)["next_batch"]
    path = f"/_matrix/client/v3/rooms/{quote(room)}/receipt/m.read/{quote(mentioned['event_id'])}"
    assert bob.post(path, {}).status_code == 200
    # The very next sync shows the new counts: only the notice came after, and notices are quiet.
    assert unread(bob, room, token) == {"notification_count": 0, "highlight_count": 0}
    alice.send_text(room, "three")
    assert unread(bob, room) == {"notification_count": 1, "highlight_count": 0}


def test_a_receipt_on_an_older_event_leaves_the_later_ones_counted(alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    first = alice.send_text(room, "one")
    alice.send_text(room, "two")
    alice.send_text(room, "three")
    assert bob.post(f"/_matrix/client/v3/rooms/{quote(room)}/receipt/m.read/{quote(first)}", {}).status_code == 200
    assert unread(bob, room)["notification_count"] == 2

"""GET /notifications over HTTP, and read receipts against the pruner of the running server."""

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.client import RoomClient, assert_error, new_room_user, ok, quote
from tests.server import ServerProcess, database_config

NOTIFICATIONS = "/_matrix/client/v3/notifications"


def pruned_every(seconds: float, backend: str, tmp: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with database_config(backend, tmp.mktemp("db")) as database:
        process = ServerProcess(tmp.mktemp("server"), database, {"push": {"prune_interval": seconds}}).start()
        try:
            yield process
        finally:
            process.stop()


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The pruner runs once at start-up and then rests for an hour: rows stay until a test wants them gone."""
    yield from pruned_every(3600, backend, tmp_path_factory)


@pytest.fixture(scope="module")
def pruning_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose pruner comes round every 0.2 s."""
    yield from pruned_every(0.2, backend, tmp_path_factory)


def notifications(client: RoomClient, **params: Any) -> dict[str, Any]:
    return ok(client.get(NOTIFICATIONS, params=params))


def group(alice: RoomClient, *members: RoomClient) -> str:
    """A room of three or more, where a plain message notifies without a sound (.m.rule.message)."""
    room = alice.create_room(preset="public_chat")
    for member in members:
        member.join(room)
    return room


def mention(client: RoomClient, room: str, user_id: str) -> str:
    path = f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/{time.monotonic_ns()}"
    body = {"msgtype": "m.text", "body": "look", "m.mentions": {"user_ids": [user_id]}}
    return ok(client.put(path, body))["event_id"]


def receipt(client: RoomClient, room: str, event_id: str) -> None:
    ok(client.post(f"/_matrix/client/v3/rooms/{quote(room)}/receipt/m.read/{quote(event_id)}", {}))


def sync(client: RoomClient, since: str | None = None) -> dict[str, Any]:
    params = {"filter": json.dumps({"room": {"timeline": {"limit": 1}}}), **({"since": since} if since else {})}
    return ok(client.get("/_matrix/client/v3/sync", params=params))


def unread(client: RoomClient, room: str, since: str) -> dict[str, int]:
    """The counts in a sync since `since` (an initial sync's answer is kept a while for a retry)."""
    return sync(client, since)["rooms"]["join"][room]["unread_notifications"]


def event_ids(page: dict[str, Any]) -> list[str]:
    return [n["event"]["event_id"] for n in page["notifications"]]


# -- the list --------------------------------------------------------------------------------------------


def test_notifications_are_the_events_newest_first_with_their_actions(
    alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = group(alice, bob, carol)
    first = alice.send_text(room, "hello")
    mentioned = mention(alice, room, bob.user_id or "")
    page = notifications(bob)
    assert "next_token" not in page
    assert event_ids(page) == [mentioned, first]
    newest, oldest = page["notifications"]
    assert oldest["actions"] == ["notify"]
    assert newest["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]
    for notification in page["notifications"]:
        assert notification["room_id"] == room
        assert notification["read"] is False
        assert "profile_tag" not in notification
        event = notification["event"]
        assert "room_id" not in event  # the spec's event without room id
        assert event["sender"] == alice.user_id and event["type"] == "m.room.message"
        assert notification["ts"] == event["origin_server_ts"]
    assert oldest["event"]["content"]["body"] == "hello"
    assert notifications(alice)["notifications"] == []  # her own messages notify nobody but the others


def test_only_highlight_lists_the_mentions(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = group(alice, bob, carol)
    alice.send_text(room, "one")
    mentioned = mention(alice, room, bob.user_id or "")
    alice.send_text(room, "two")
    assert event_ids(notifications(bob, only="highlight")) == [mentioned]
    assert len(notifications(bob)["notifications"]) == 3
    assert notifications(carol, only="highlight")["notifications"] == []


def test_pages_follow_next_token_to_the_end(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = group(alice, bob, carol)
    sent = [alice.send_text(room, f"message {n}") for n in range(5)]
    seen, token, pages = [], None, 0
    while True:
        page = notifications(bob, limit=2, **({"from": token} if token else {}))
        seen += event_ids(page)
        pages += 1
        token = page.get("next_token")
        if token is None:
            break
        assert isinstance(token, str)
    assert seen == sent[::-1]
    assert pages == 3  # 2 + 2 + 1


def test_a_page_that_ends_exactly_at_the_last_notification_has_no_next_token(
    alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = group(alice, bob, carol)
    for n in range(2):
        alice.send_text(room, f"message {n}")
    assert "next_token" not in notifications(bob, limit=2)


def test_read_flags_follow_the_receipt_and_the_next_sync_shows_zero(
    alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = group(alice, bob, carol)
    sent = [alice.send_text(room, f"message {n}") for n in range(3)]
    token = sync(bob)["next_batch"]
    receipt(bob, room, sent[1])
    page = notifications(bob)
    assert [n["read"] for n in page["notifications"]] == [False, True, True]  # newest first
    assert unread(bob, room, token) == {"notification_count": 1, "highlight_count": 0}
    token = sync(bob)["next_batch"]
    receipt(bob, room, sent[2])
    assert unread(bob, room, token) == {"notification_count": 0, "highlight_count": 0}
    # The receipt deleted nothing: the rows stay, read, until the pruner comes round.
    assert [n["read"] for n in notifications(bob)["notifications"]] == [True, True, True]
    assert [n["read"] for n in notifications(carol)["notifications"]] == [False, False, False]


@pytest.mark.parametrize(
    "params",
    [{"from": "not-a-token"}, {"from": "-5"}, {"limit": "many"}, {"limit": "0"}, {"limit": "-1"}],
    ids=["from-word", "from-negative", "limit-word", "limit-zero", "limit-negative"],
)
def test_bad_parameters_are_refused(bob: RoomClient, params: dict[str, str]) -> None:
    assert_error(bob.get(NOTIFICATIONS, params=params), 400, "M_INVALID_PARAM")


def test_a_limit_above_the_cap_is_lowered_and_other_only_values_are_ignored(
    alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = group(alice, bob, carol)
    alice.send_text(room, "hi")
    assert len(notifications(bob, limit=100000)["notifications"]) == 1
    assert len(notifications(bob, only="everything")["notifications"]) == 1


def test_notifications_need_an_access_token(server: ServerProcess) -> None:
    assert_error(requests.get(server.url + NOTIFICATIONS, timeout=10), 401, "M_MISSING_TOKEN")


# -- the running server's pruner ----------------------------------------------------------------------------


def test_the_running_servers_pruner_deletes_read_rows_and_says_so_in_health(pruning_server: ServerProcess) -> None:
    alice, bob, carol = (new_room_user(pruning_server.url) for _ in range(3))
    room = group(alice, bob, carol)
    sent = [alice.send_text(room, f"message {n}") for n in range(4)]
    token = sync(bob)["next_batch"]
    receipt(bob, room, sent[-1])
    assert unread(bob, room, token)["notification_count"] == 0
    deadline = time.monotonic() + 20
    while notifications(bob)["notifications"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert notifications(bob)["notifications"] == []
    assert len(notifications(carol)["notifications"]) == 4  # unread: kept
    pruner = ok(requests.get(pruning_server.url + "/health", timeout=10))["push_pruner"]
    assert pruner["read_rows_deleted"] == pruner["rows_deleted"] == 4
    assert pruner["runs"] >= 1 and pruner["batches"] >= 1 and pruner["errors"] == 0
    line = "push pruner: deleted 4 read and 0 expired push actions in 1 batches"
    while line not in pruning_server.log() and time.monotonic() < deadline:
        time.sleep(0.1)  # the run logs once it has found nothing more to do
    assert line in pruning_server.log()

"""The admin HTTP API (/_homeserver/admin/v1/) against the real server: purges in the background with a
status to poll, dry runs, room deletion with a block, deactivation, statistics, and who may call it."""

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from homeserver.config.options import DatabaseConfig
from homeserver.storage.database import Database
from homeserver.storage.engines import create_engine
from tests.client import (
    PASSWORD,
    Client,
    RoomClient,
    assert_error,
    new_room_user,
    ok,
    pusher_body,
    quote,
    set_pusher,
    unread_counts,
)
from tests.integration.test_cli import homeserver
from tests.server import ServerProcess, database_config

ADMIN = "/_homeserver/admin/v1"


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's server pauses 300 ms between purge batches, so a purge is still running while a test
    looks at it."""
    directory = tmp_path_factory.mktemp(f"admin-{backend}")
    with database_config(backend, directory) as database:
        process = ServerProcess(directory, database, {"push": {"prune_pause_ms": 300}}).start()
        try:
            yield process
        finally:
            process.stop()


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> RoomClient:
    """A user made admin with the command line, logged in afresh."""
    client = new_room_user(server.url)
    result = homeserver("admin", "set-admin", client.user_id or "", "-c", str(server.config_path))
    assert result.returncode == 0, result.stderr
    assert "is now an admin" in result.stdout
    assert client.login(client.user_id or "", PASSWORD).status_code == 200
    return client


def wait_for(admin: Client, purge_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = ok(admin.get(f"{ADMIN}/purges/{purge_id}"))
        if status["state"] != "running":
            return status
        time.sleep(0.1)
    raise AssertionError(f"purge {purge_id} still running")


def messages_back(client: RoomClient, room_id: str) -> list[dict]:
    """Every event /messages gives going back from the end, newest first, until it says there is no more."""
    events, token = [], None
    while True:
        page = ok(client.room_get(room_id, "messages", dir="b", limit=5, **({"from": token} if token else {})))
        events += page["chunk"]
        if "end" not in page:
            return events
        token = page["end"]


def bodies(events: list[dict]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


def test_the_admin_api_needs_an_admin(server: ServerProcess, alice: RoomClient) -> None:
    room = alice.create_room()
    calls = [
        ("POST", f"{ADMIN}/rooms/{quote(room)}/purge_history", {"before_ts": 1}),
        ("DELETE", f"{ADMIN}/rooms/{quote(room)}", {}),
        ("GET", f"{ADMIN}/rooms/{quote(room)}", None),
        ("POST", f"{ADMIN}/push_actions/purge", {"room_id": room}),
        ("POST", f"{ADMIN}/users/{quote(alice.user_id or '')}/deactivate", {}),
        ("PUT", f"{ADMIN}/users/{quote(alice.user_id or '')}/admin", {"admin": True}),
        ("GET", f"{ADMIN}/statistics", None),
        ("GET", f"{ADMIN}/purges/whatever", None),
    ]
    for method, path, body in calls:
        assert_error(Client(server.url).request(method, path, body), 401, "M_MISSING_TOKEN")
        assert_error(alice.request(method, path, body), 403, "M_FORBIDDEN")
    alice.send_text(room, "still here")  # nothing happened


def test_purge_history_runs_in_the_background_and_the_room_stays_usable(
    admin: RoomClient, alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = alice.create_room(preset="public_chat", name="history")
    bob.join(room)
    sent = [alice.send_text(room, f"message {i}") for i in range(8)]
    path = f"{ADMIN}/rooms/{quote(room)}/purge_history"

    dry = ok(admin.post(path, {"before_event_id": sent[5], "dry_run": True}))
    assert dry["dry_run"] is True and dry["counts"]["events"] == 5
    assert bodies(messages_back(bob, room))[-1] == "message 0"  # a dry run changes nothing

    answer = admin.post(path, {"before_event_id": sent[5]})
    assert answer.status_code == 202, answer.text
    status = wait_for(admin, answer.json()["purge_id"])
    assert status["state"] == "complete" and status["errors"] == []
    assert status["deleted"]["events"] == 5 and status["planned"]["events"] == 5

    timeline = messages_back(bob, room)
    assert bodies(timeline) == ["message 7", "message 6", "message 5"]
    assert all("state_key" in e for e in timeline if e["type"] != "m.room.message")
    assert ok(bob.room_get(room, "state/m.room.name/"))["name"] == "history"
    carol.join(room)
    carol.send_text(room, "hello after the purge")
    joined = ok(carol.get("/_matrix/client/v3/sync"))["rooms"]["join"][room]
    assert bodies(joined["timeline"]["events"])[-1] == "hello after the purge"
    assert_error(bob.room_get(room, f"event/{quote(sent[0])}"), 404, "M_NOT_FOUND")


def test_purge_history_errors(admin: RoomClient, alice: RoomClient) -> None:
    room = alice.create_room()
    other = alice.create_room()
    event = alice.send_text(other, "elsewhere")
    path = f"{ADMIN}/rooms/{quote(room)}/purge_history"
    assert_error(admin.post(f"{ADMIN}/rooms/{quote('!nope:localhost')}/purge_history", {"before_ts": 1}), 404,
                 "M_NOT_FOUND")
    assert_error(admin.post(path, {"before_event_id": event}), 404, "M_NOT_FOUND")
    assert_error(admin.post(path, {"before_ts": "yesterday"}), 400, "M_INVALID_PARAM")
    assert_error(admin.post(path, {"before_ts": -5}), 400, "M_INVALID_PARAM")
    assert_error(admin.post(path, {}), 400, "M_MISSING_PARAM")
    assert_error(admin.post(path, {"before_ts": 1, "before_event_id": event}), 400, "M_MISSING_PARAM")
    assert_error(admin.get(f"{ADMIN}/purges/nope"), 404, "M_NOT_FOUND")


def test_delete_room_makes_members_leave_and_blocks_it(
    admin: RoomClient, alice: RoomClient, bob: RoomClient, carol: RoomClient
) -> None:
    room = alice.create_room(preset="public_chat", room_alias_name=f"gone{time.monotonic_ns()}")
    bob.join(room)
    alice.send_text(room, "soon gone")
    keep = alice.create_room(preset="public_chat")
    kept = alice.send_text(keep, "kept")
    dry = ok(admin.delete(f"{ADMIN}/rooms/{quote(room)}", {"dry_run": True}))
    assert dry["counts"]["members"] == 2 and dry["counts"]["rooms"] == 1

    since = ok(bob.get("/_matrix/client/v3/sync"))["next_batch"]
    left: list[str] = []

    def follow_bob() -> None:
        """Bob's client, syncing as clients do: the first wake-up may be Alice's leave, his own comes next."""
        token, deadline = since, time.monotonic() + 20
        while not left and time.monotonic() < deadline:
            body = ok(bob.get("/_matrix/client/v3/sync", params={"since": token, "timeout": 5000}))
            left.extend(body.get("rooms", {}).get("leave", {}))
            token = body["next_batch"]

    poll = threading.Thread(target=follow_bob)
    poll.start()
    time.sleep(0.3)
    answer = admin.delete(f"{ADMIN}/rooms/{quote(room)}", {"block": True})
    assert answer.status_code == 202, answer.text
    poll.join(30)
    assert left == [room]  # Bob's client saw the room go while it was being deleted
    status = wait_for(admin, answer.json()["purge_id"])
    assert status["state"] == "complete", status
    assert status["deleted"]["members"] == 2 and status["deleted"]["rooms"] == 1

    for client in (bob, carol):
        body = assert_error(client.post(f"/_matrix/client/v3/join/{quote(room)}", {}), 403, "M_FORBIDDEN")
        assert body["error"] == "This room has been blocked"
    assert_error(admin.get(f"{ADMIN}/rooms/{quote(room)}"), 404, "M_NOT_FOUND")
    assert room not in ok(alice.get("/_matrix/client/v3/joined_rooms"))["joined_rooms"]
    assert ok(alice.room_get(keep, f"event/{quote(kept)}"))["content"]["body"] == "kept"


def test_purge_push_actions_zeroes_unread_counts(admin: RoomClient, alice: RoomClient, bob: RoomClient) -> None:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    for i in range(3):
        alice.send_text(room, f"ping {i}")
    assert unread_counts(bob, room) == (3, 0)
    path = f"{ADMIN}/push_actions/purge"
    assert ok(admin.post(path, {"user_id": bob.user_id, "dry_run": True}))["counts"] == {"event_push_actions": 3}
    status = wait_for(admin, admin.post(path, {"user_id": bob.user_id}).json()["purge_id"])
    assert status["deleted"] == {"event_push_actions": 3}
    assert unread_counts(bob, room) == (0, 0)
    assert_error(admin.post(path, {"user_id": "@nobody:localhost"}), 404, "M_NOT_FOUND")
    assert_error(admin.post(path, {"room_id": "!nope:localhost"}), 404, "M_NOT_FOUND")
    assert_error(admin.post(path, {}), 400, "M_MISSING_PARAM")


def count_rows(server: ServerProcess, sql: str, *args: Any) -> int:
    """A count read straight from the running server's database."""
    section = server.config["database"]
    db = Database(create_engine(DatabaseConfig(name=section["name"], args=section["args"])), 1, 1)
    try:
        return db.run_blocking("test", lambda txn: txn.execute(sql, args).fetchone()[0])
    finally:
        db.close()


def test_deactivate_user_logs_them_out_leaves_their_rooms_and_drops_their_pushers(
    server: ServerProcess, admin: RoomClient, alice: RoomClient, bob: RoomClient
) -> None:
    rooms = [alice.create_room(preset="public_chat") for _ in range(2)]
    for room in rooms:
        bob.join(room)
    ok(set_pusher(bob, pusher_body("http://127.0.0.1:9/_matrix/push/v1/notify")))
    path = f"{ADMIN}/users/{quote(bob.user_id or '')}/deactivate"
    done = ok(admin.post(path, {}))
    assert sorted(done["rooms_left"]) == sorted(rooms) and done["errors"] == []
    assert_error(bob.get("/_matrix/client/v3/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    for room in rooms:
        members = ok(alice.room_get(room, "joined_members"))["joined"]
        assert bob.user_id not in members
    assert ok(admin.post(path, {}))["rooms_left"] == []  # again: nothing left to do
    assert count_rows(server, "SELECT count(*) FROM pushers WHERE user_id = ?", bob.user_id) == 0
    assert Client(alice.base_url).login(bob.user_id or "").status_code == 403
    assert_error(admin.post(f"{ADMIN}/users/{quote('@nobody:localhost')}/deactivate", {}), 404, "M_NOT_FOUND")
    assert_error(admin.post(f"{ADMIN}/users/{quote('@x:elsewhere.org')}/deactivate", {}), 400, "M_INVALID_PARAM")


def test_set_admin(admin: RoomClient, alice: RoomClient) -> None:
    path = f"{ADMIN}/users/{quote(alice.user_id or '')}/admin"
    ok(admin.put(path, {"admin": True}))
    assert ok(alice.get(f"{ADMIN}/statistics")).get("tables")
    ok(admin.put(path, {"admin": False}))
    assert_error(alice.get(f"{ADMIN}/statistics"), 403, "M_FORBIDDEN")
    assert_error(admin.put(path, {"admin": "yes"}), 400, "M_INVALID_PARAM")


def test_statistics(admin: RoomClient, alice: RoomClient) -> None:
    room = alice.create_room()
    for i in range(3):
        alice.send_text(room, f"count me {i}")
    stats = ok(admin.get(f"{ADMIN}/statistics", params={"exact": "true", "rooms": 1000}))
    assert stats["database"]["size_bytes"] > 0 and stats["database"]["rows_estimated"] is False
    assert stats["tables"]["events"]["rows"] >= 3 + 5
    mine = [r for r in stats["biggest_rooms"] if r["room_id"] == room]
    assert mine and mine[0]["joined_members"] == 1 and mine[0]["events"] >= 8
    assert "events" in ok(admin.get(f"{ADMIN}/statistics"))["tables"]
    detail = ok(admin.get(f"{ADMIN}/rooms/{quote(room)}"))
    assert detail["events"] == mine[0]["events"] and detail["memberships"] == {"join": 1}
    assert detail["rows"]["events"] == detail["events"] and detail["blocked"] is False
    assert_error(admin.get(f"{ADMIN}/statistics", params={"exact": "maybe"}), 400, "M_INVALID_PARAM")

"""Presence through the real server: PUT and GET /presence/{userId}/status, m.presence in /sync (initial,
incremental, waking a long-poll), who may see whom, timeouts, the `presence.enabled` switch, old tokens,
and matrix-nio. The state machine itself is in tests/unit/test_presence.py."""

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from nio import AsyncClient, PresenceEvent, PresenceGetResponse, PresenceSetResponse, SyncResponse

from homeserver.config.options import DatabaseConfig
from homeserver.storage.database import Database
from homeserver.storage.engines import create_engine
from homeserver.storage.presence import PresenceRow, PresenceStore
from tests.client import Client, RoomClient, assert_error, new_room_user, ok, quote
from tests.inline import resolve
from tests.integration.servers import extra_server
from tests.server import ServerProcess

SYNC = "/_matrix/client/v3/sync"


def status_path(user_id: str, version: str = "v3") -> str:
    return f"/_matrix/client/{version}/presence/{quote(user_id)}/status"


def put_presence(client: Client, body: Any, user_id: str | None = None) -> requests.Response:
    return client.put(status_path(user_id or client.user_id or ""), body)


def get_presence(client: Client, user_id: str) -> requests.Response:
    return client.get(status_path(user_id))


def sync(client: Client, since: str | None = None, **params: Any) -> dict[str, Any]:
    if since:
        params["since"] = since
    if isinstance(params.get("filter"), dict):
        params["filter"] = json.dumps(params["filter"])
    response = client.get(SYNC, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def presence_of(body: dict[str, Any], user_id: str | None) -> list[dict[str, Any]]:
    """The content of the user's m.presence events in a sync response."""
    events = body["presence"]["events"]
    assert all(e["type"] == "m.presence" for e in events), events
    return [e["content"] for e in events if e["sender"] == user_id]


def sharing(alice: RoomClient, bob: RoomClient) -> str:
    room = alice.create_room(preset="public_chat")
    bob.join(room)
    return room


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_a_member_sees_presence_in_initial_and_incremental_sync(alice: RoomClient, bob: RoomClient) -> None:
    sharing(alice, bob)
    ok(put_presence(alice, {"presence": "online", "status_msg": "writing tests"}))
    body = sync(bob)
    [content] = presence_of(body, alice.user_id)
    assert content["presence"] == "online" and content["status_msg"] == "writing tests"
    assert content["currently_active"] is True and content["last_active_ago"] >= 0
    assert presence_of(body, bob.user_id)[0]["presence"] == "online"  # the sync itself brought bob online

    ok(put_presence(alice, {"presence": "unavailable"}))
    body = sync(bob, body["next_batch"])
    assert presence_of(body, alice.user_id) == [
        {"presence": "unavailable", "last_active_ago": presence_of(body, alice.user_id)[0]["last_active_ago"]}
    ]
    assert presence_of(sync(bob, body["next_batch"]), alice.user_id) == []  # nothing changed since


def test_a_presence_change_wakes_a_long_poll(alice: RoomClient, bob: RoomClient) -> None:
    sharing(alice, bob)
    token = sync(bob)["next_batch"]
    timer = threading.Timer(0.5, put_presence, (alice, {"presence": "online", "status_msg": "awake"}))
    timer.start()
    started = time.monotonic()
    body = sync(bob, token, timeout=20000)
    timer.join()
    assert time.monotonic() - started < 10
    assert presence_of(body, alice.user_id)[0]["status_msg"] == "awake"


def test_a_stranger_is_refused_and_sees_nothing(alice: RoomClient, carol: RoomClient) -> None:
    ok(put_presence(alice, {"presence": "online", "status_msg": "private"}))
    assert_error(get_presence(carol, alice.user_id or ""), 403, "M_FORBIDDEN")
    body = sync(carol)
    assert presence_of(body, alice.user_id) == []
    ok(put_presence(alice, {"presence": "unavailable", "status_msg": "still private"}))
    assert presence_of(sync(carol, body["next_batch"]), alice.user_id) == []


def test_presence_comes_with_a_newly_shared_room(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    ok(put_presence(alice, {"presence": "online", "status_msg": "hello newcomer"}))
    ok(put_presence(carol, {"presence": "unavailable", "status_msg": "idle"}))
    token = sync(bob)["next_batch"]
    assert presence_of(sync(bob, token), alice.user_id) == []
    room = alice.create_room(preset="public_chat")
    bob.join(room)  # bob joins alice's room: her presence comes, unchanged as it is
    body = sync(bob, token)
    assert presence_of(body, alice.user_id)[0]["status_msg"] == "hello newcomer"
    carol.join(room)  # carol joins a room of bob's
    assert presence_of(sync(bob, body["next_batch"]), carol.user_id)[0]["status_msg"] == "idle"


def test_status_message_round_trip_and_who_may_read_it(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    ok(put_presence(alice, {"presence": "online", "status_msg": "on a train"}))
    mine = ok(get_presence(alice, alice.user_id or ""))
    assert mine["presence"] == "online" and mine["status_msg"] == "on a train" and mine["currently_active"] is True
    assert_error(get_presence(bob, alice.user_id or ""), 403, "M_FORBIDDEN")
    sharing(alice, bob)
    assert ok(get_presence(bob, alice.user_id or ""))["status_msg"] == "on a train"
    assert ok(bob.get(status_path(alice.user_id or "", "r0")))["status_msg"] == "on a train"
    ok(put_presence(alice, {"presence": "online"}))  # no status_msg: it is cleared
    assert "status_msg" not in ok(get_presence(bob, alice.user_id or ""))
    # Someone who never set a presence is offline.
    assert ok(get_presence(carol, carol.user_id or "")) == {"presence": "offline"}


def test_unknown_users_and_bad_ids(alice: RoomClient) -> None:
    assert_error(get_presence(alice, "@nobody_here:localhost"), 404, "M_NOT_FOUND")
    assert_error(get_presence(alice, "not-a-user"), 400, "M_INVALID_PARAM")


def test_nobody_sets_someone_elses_presence(alice: RoomClient, bob: RoomClient) -> None:
    sharing(alice, bob)
    assert_error(put_presence(bob, {"presence": "offline"}, alice.user_id), 403, "M_FORBIDDEN")
    assert_error(put_presence(bob, {"presence": "offline"}, "@nobody_here:localhost"), 403, "M_FORBIDDEN")


def test_malformed_requests_change_nothing(alice: RoomClient) -> None:
    ok(put_presence(alice, {"presence": "online", "status_msg": "unchanged"}))
    assert_error(put_presence(alice, {"presence": "away"}), 400, "M_INVALID_PARAM")
    assert_error(put_presence(alice, {"presence": 1}), 400, "M_INVALID_PARAM")
    assert_error(put_presence(alice, {"presence": "online", "status_msg": 5}), 400, "M_INVALID_PARAM")
    assert_error(put_presence(alice, {"status_msg": "no state"}), 400, "M_MISSING_PARAM")
    assert_error(put_presence(alice, ["online"]), 400, "M_BAD_JSON")
    assert_error(alice.put(status_path(alice.user_id or ""), data=b"{nope"), 400, "M_NOT_JSON")
    assert_error(put_presence(Client(alice.base_url), {"presence": "online"}, alice.user_id), 401, "M_MISSING_TOKEN")
    now = ok(get_presence(alice, alice.user_id or ""))
    assert (now["presence"], now["status_msg"]) == ("online", "unchanged")


def test_a_filter_decides_which_presence_comes(alice: RoomClient, bob: RoomClient, carol: RoomClient) -> None:
    room = sharing(alice, bob)
    carol.join(room)
    ok(put_presence(alice, {"presence": "online"}))
    ok(put_presence(carol, {"presence": "online"}))
    assert sync(bob, filter={"presence": {"types": []}})["presence"]["events"] == []
    assert sync(bob, filter={"presence": {"not_types": ["m.*"]}})["presence"]["events"] == []
    only_alice = sync(bob, filter={"presence": {"senders": [alice.user_id]}})["presence"]["events"]
    assert [e["sender"] for e in only_alice] == [alice.user_id]
    assert len(sync(bob, filter={"presence": {"limit": 1}})["presence"]["events"]) == 1


def test_an_old_six_field_token_is_still_accepted(alice: RoomClient, bob: RoomClient) -> None:
    sharing(alice, bob)
    token = sync(bob)["next_batch"]
    assert token.count("_") == 6
    old = token.rsplit("_", 1)[0]  # as written before the presence stream existed
    ok(put_presence(alice, {"presence": "online", "status_msg": "after the upgrade"}))
    body = sync(bob, old)
    assert presence_of(body, alice.user_id)[-1]["status_msg"] == "after the upgrade"
    assert body["next_batch"].count("_") == 6


def test_idle_and_sync_timeouts(backend: str, tmp_path: Path) -> None:
    overrides = {"presence": {"idle_timeout": 1.0, "sync_timeout": 4.0}}
    with extra_server(backend, tmp_path, overrides) as server:
        alice, bob = new_room_user(server.url), new_room_user(server.url)
        sharing(alice, bob)
        token = sync(bob, set_presence="offline")["next_batch"]
        sync(alice)  # online; the sync ends, and the sync timeout starts
        assert ok(get_presence(bob, alice.user_id or ""))["presence"] == "online"
        eventually(lambda: ok(get_presence(bob, alice.user_id or ""))["presence"] == "unavailable")
        eventually(lambda: ok(get_presence(bob, alice.user_id or ""))["presence"] == "offline")
        # Bob's next sync carries where she ended up; her next sync brings her back.
        assert presence_of(sync(bob, token, set_presence="offline"), alice.user_id)[-1]["presence"] == "offline"
        body = sync(alice)
        assert presence_of(body, alice.user_id)[0]["presence"] == "online"


def test_presence_survives_a_restart_and_who_does_not_come_back_goes_offline(backend: str, tmp_path: Path) -> None:
    with extra_server(backend, tmp_path, {"presence": {"sync_timeout": 3.0}}) as server:
        alice, bob = new_room_user(server.url), new_room_user(server.url)
        sharing(alice, bob)
        ok(put_presence(alice, {"presence": "online", "status_msg": "before the restart"}))
        token = sync(bob, set_presence="offline")["next_batch"]
        server.stop()
        server.start()
        theirs = ok(get_presence(bob, alice.user_id or ""))
        assert (theirs["presence"], theirs["status_msg"]) == ("online", "before the restart")
        assert presence_of(sync(bob, token, set_presence="offline"), alice.user_id) == []  # nothing new yet
        eventually(lambda: ok(get_presence(bob, alice.user_id or ""))["presence"] == "offline")
        [content] = presence_of(sync(bob, token, set_presence="offline"), alice.user_id)
        assert (content["presence"], content["status_msg"]) == ("offline", "before the restart")


def test_disabled_presence_means_no_presence_at_all(backend: str, tmp_path: Path) -> None:
    with extra_server(backend, tmp_path, {"presence": {"enabled": False}}) as server:
        alice, bob = new_room_user(server.url), new_room_user(server.url)
        room = sharing(alice, bob)
        token = sync(bob)["next_batch"]
        assert ok(put_presence(alice, {"presence": "online", "status_msg": "hello?"})) == {}
        assert_error(put_presence(bob, {"presence": "online"}, alice.user_id), 403, "M_FORBIDDEN")
        assert ok(get_presence(bob, alice.user_id or "")) == {"presence": "offline"}
        alice.send_text(room, "are you there")
        body = sync(bob, token, timeout=1000)
        assert body["presence"]["events"] == []
        assert sync(bob)["presence"]["events"] == []
        assert sync(alice, set_presence="unavailable")["presence"]["events"] == []
        assert stored_presence(server) == []  # nothing was written


def stored_presence(server: ServerProcess) -> list[PresenceRow]:
    section = server.config["database"]
    db = Database(create_engine(DatabaseConfig(name=section["name"], args=section["args"])), 1, 1)
    try:
        return resolve(PresenceStore(db).load_all())
    finally:
        db.close()


def test_presence_through_matrix_nio(server: ServerProcess, alice: RoomClient) -> None:
    async def scenario() -> None:
        client = AsyncClient(server.url, "nio_" + uuid.uuid4().hex[:10])
        try:
            assert (await client.register(client.user, "a nio password")).user_id
            room = alice.create_room(preset="public_chat")
            response = await client.join(room)
            assert getattr(response, "room_id", None) == room, response
            ok(put_presence(alice, {"presence": "online", "status_msg": "hi nio"}))
            synced = await client.sync(timeout=0, set_presence="online")
            assert isinstance(synced, SyncResponse), synced
            seen = [e for e in synced.presence_events if isinstance(e, PresenceEvent) and e.user_id == alice.user_id]
            assert seen and seen[0].presence == "online" and seen[0].status_msg == "hi nio"

            assert isinstance(await client.set_presence("unavailable", "busy with nio"), PresenceSetResponse)
            got = await client.get_presence(client.user_id)
            assert isinstance(got, PresenceGetResponse), got
            assert (got.presence, got.status_msg) == ("unavailable", "busy with nio")
            theirs = await client.get_presence(alice.user_id or "")
            assert isinstance(theirs, PresenceGetResponse), theirs
            assert (theirs.presence, theirs.status_msg, theirs.currently_active) == ("online", "hi nio", True)
        finally:
            await client.close()

    asyncio.run(scenario())

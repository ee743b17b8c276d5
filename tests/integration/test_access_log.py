"""The access log: one line per request, dispatched or refused at the door, plain or JSON, never a token."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.client import new_room_user, ok
from tests.integration.servers import extra_server
from tests.server import ServerProcess

ACCESS = "homeserver.access"


@pytest.fixture(scope="module")
def json_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    overrides = {"logging": {"format": "json"}, "max_request_body_size": "2K"}
    with extra_server(backend, tmp_path_factory.mktemp("json-log"), overrides) as process:
        yield process


def access_entries(server: ServerProcess, count: int) -> list[dict[str, Any]]:
    """The server's access log entries, once there are at least `count` (a line is written as the response is)."""
    deadline = time.monotonic() + 5
    while True:
        entries = [json.loads(line) for line in server.log().splitlines() if f'"logger": "{ACCESS}"' in line]
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def test_each_request_has_a_json_entry_with_its_fields_and_no_token(json_server: ServerProcess) -> None:
    alice = new_room_user(json_server.url)
    room = alice.create_room()
    token = alice.access_token
    assert token
    # A token in the query string is as secret as one in the header.
    ok(requests.get(f"{json_server.url}/_matrix/client/v3/account/whoami?access_token={token}", timeout=10))
    ok(alice.get(f"/_matrix/client/v3/rooms/{room}/state"))
    entries = access_entries(json_server, 4)
    whoami = [e for e in entries if e["path"] == "/_matrix/client/v3/account/whoami"][-1]
    assert whoami["method"] == "GET" and whoami["status"] == 200 and whoami["user"] == alice.user_id
    assert whoami["request_id"].startswith("GET-") and whoami["client_ip"] == "127.0.0.1"
    assert isinstance(whoami["ms"], float) and whoami["bytes"] > 0
    state = [e for e in entries if e["path"] == "/_matrix/client/v3/rooms/{room_id}/state"]
    assert state, "the path template, not the path with the room id"
    assert len({e["request_id"] for e in entries}) == len(entries)
    assert token not in json_server.log()


def test_a_body_refused_before_dispatch_is_logged_too(json_server: ServerProcess) -> None:
    alice = new_room_user(json_server.url)
    before = len(access_entries(json_server, 0))
    response = alice.put("/_matrix/client/v3/profile/" + str(alice.user_id) + "/displayname", {"x": "y" * 5000})
    assert response.status_code == 413
    refused = [e for e in access_entries(json_server, before + 1)[before:] if e["status"] == 413]
    assert refused and refused[0]["path"] == "/_matrix/client/v3/profile/{user_id}/{field}"
    assert refused[0]["method"] == "PUT" and refused[0]["user"] == "-"


def test_plain_lines_carry_the_same_fields(backend: str, tmp_path: Path) -> None:
    with extra_server(backend, tmp_path) as server:
        alice = new_room_user(server.url)
        ok(alice.get("/_matrix/client/v3/account/whoami"))
        deadline = time.monotonic() + 5
        while "/account/whoami 200" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(line for line in server.log().splitlines() if "/account/whoami 200" in line)
        assert (
            f"{ACCESS}: GET-" in line and f"127.0.0.1 {alice.user_id} GET /_matrix/client/v3/account/whoami 200" in line
        )
        assert line.endswith("B") and "ms " in line
        assert str(alice.access_token) not in server.log()

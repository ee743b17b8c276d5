"""Back-pagination of a room joined over federation: /messages reaches the start of what this server holds
(the join) and fetches older history from the room's other server with /backfill."""

from collections.abc import Iterator
from typing import Any

import pytest

from tests.client import RoomClient, new_room_user, ok, quote
from tests.federation_servers import FederatingServer, federating_server

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module")
def pair(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FederatingServer, FederatingServer]]:
    with (
        federating_server(backend, tmp_path_factory.mktemp(f"backfill-a-{backend}")) as a,
        federating_server(backend, tmp_path_factory.mktemp(f"backfill-b-{backend}")) as b,
    ):
        yield a, b


def paginate(client: RoomClient, room_id: str, limit: int) -> list[dict[str, Any]]:
    """The whole timeline, newest first, in pages of `limit`."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"dir": "b", "limit": limit}
    while True:
        page = ok(client.room_get(room_id, "messages", **params))
        events += page["chunk"]
        if "end" not in page:
            return events
        params["from"] = page["end"]


def test_history_from_before_the_join_is_backfilled(pair: tuple[FederatingServer, FederatingServer]) -> None:
    a, b = pair
    alice, bob = new_room_user(a.url), new_room_user(b.url)
    room_id = alice.create_room(preset="public_chat")
    for i in range(45):
        alice.send_text(room_id, f"old {i}")
    ok(bob.post(f"/_matrix/client/v3/join/{quote(room_id)}?server_name={quote(a.server_name)}", {}))
    since = ok(bob.get("/_matrix/client/v3/sync", params={"timeout": 0}))["next_batch"]
    timeline = paginate(bob, room_id, 10)
    bodies = [e["content"]["body"] for e in timeline if e["type"] == "m.room.message"]
    assert bodies == [f"old {i}" for i in reversed(range(45))]
    assert timeline[-1]["type"] == "m.room.create"  # all the way to the room's start
    ids = [e["event_id"] for e in timeline]
    assert len(ids) == len(set(ids))
    assert [e["event_id"] for e in paginate(alice, room_id, 100)] == ids  # the same history on both servers
    # Old history is not news: an incremental sync from before the pagination does not report it.
    sync = ok(bob.get("/_matrix/client/v3/sync", params={"timeout": 0, "since": since}))
    news = sync["rooms"]["join"].get(room_id, {}).get("timeline", {}).get("events", [])
    assert not [e for e in news if e["type"] == "m.room.message"]

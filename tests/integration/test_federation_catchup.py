"""Our sender's catch-up against a real Synapse: what our user sent while Synapse was down arrives, all of
it and in order, once Synapse is back. (The other direction, our downtime, is in
test_federation_synapse_history.py.)"""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client import RoomClient, new_room_user, ok
from tests.federation_servers import FederatingServer, federating_server
from tests.integration.test_federation_membership import eventually, join_via, sees_text
from tests.synapse import SynapseProcess, running_synapse

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
WHILE_DOWN = 60  # more than one transaction's 50 PDUs
# Retry within a second or two of Synapse coming back (the default first backoff is 5 s, doubling to 1 h).
SHORT_BACKOFF = {"federation": {"min_retry_interval": 200, "max_retry_interval": 1000}}


@pytest.fixture
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseProcess]:
    """A Synapse of the test's own: the test stops it."""
    with running_synapse(tmp_path_factory.mktemp("synapse")) as process:
        yield process


@pytest.fixture
def ours(backend: str, tmp_path: Path) -> Iterator[FederatingServer]:
    with federating_server(backend, tmp_path, SHORT_BACKOFF) as process:
        yield process


def new_texts(user: RoomClient, room_id: str, since: str) -> list[str]:
    """The room's messages in the user's /sync after `since`, in the order sync gives them."""
    room_filter = json.dumps({"room": {"timeline": {"limit": 200}}})
    answer = ok(user.get("/_matrix/client/v3/sync", params={"timeout": 0, "since": since, "filter": room_filter}))
    room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
    return [
        e["content"].get("body") for e in room.get("timeline", {}).get("events", []) if e["type"] == "m.room.message"
    ]


def test_messages_sent_while_synapse_was_down_arrive_in_order_after_it_restarts(
    ours: FederatingServer, synapse: SynapseProcess
) -> None:
    alice = new_room_user(ours.url)
    room_id = alice.create_room(preset="public_chat")
    sam = synapse.register()
    join_via(sam, room_id, ours.server_name)
    alice.send_text(room_id, "before")
    eventually(sees_text(sam, room_id, "before"), "the first message at Synapse")
    since = ok(sam.get("/_matrix/client/v3/sync", params={"timeout": 0}))["next_batch"]

    synapse.stop()
    sent = [f"while down {i}" for i in range(WHILE_DOWN)]
    for text in sent:
        alice.send_text(room_id, text)
    synapse.start()

    expected = sent[-1]
    eventually(lambda: expected in new_texts(sam, room_id, since), "the last message at Synapse after its restart")
    assert new_texts(sam, room_id, since) == sent

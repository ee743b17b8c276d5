"""History across servers with a real Synapse: back-pagination both ways (/backfill served and used), and
the gap Synapse leaves after our server was down (it sends only the latest event; we fetch the rest)."""

from pathlib import Path

import pytest

from tests.client import RoomClient, new_room_user, ok
from tests.federation_servers import federating_server
from tests.integration.test_federation_membership import eventually, join_via, sees_text
from tests.synapse import SynapseProcess

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
HISTORY = 100  # the "backfill of 100 older messages"


def all_texts(user: RoomClient, room_id: str) -> list[str]:
    """Every message of the room, oldest first, paginating back in pages of 30."""
    texts: list[str] = []
    params: dict = {"dir": "b", "limit": 30}
    while True:
        page = ok(user.room_get(room_id, "messages", **params))
        texts += [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]
        if "end" not in page:
            return texts[::-1]
        params["from"] = page["end"]


def test_our_user_back_paginates_history_of_a_synapse_room(
    backend: str, synapse: SynapseProcess, tmp_path: Path
) -> None:
    with federating_server(backend, tmp_path) as ours:
        sam = synapse.register()
        room_id = sam.create_room(preset="public_chat")
        for i in range(HISTORY):
            sam.send_text(room_id, f"old {i}")
        alice = new_room_user(ours.url)
        join_via(alice, room_id, synapse.server_name)
        assert all_texts(alice, room_id) == [f"old {i}" for i in range(HISTORY)]


def test_synapse_user_back_paginates_history_of_our_room(backend: str, synapse: SynapseProcess, tmp_path: Path) -> None:
    with federating_server(backend, tmp_path) as ours:
        alice = new_room_user(ours.url)
        room_id = alice.create_room(preset="public_chat")
        for i in range(HISTORY):
            alice.send_text(room_id, f"old {i}")
        sam = synapse.register()
        join_via(sam, room_id, ours.server_name)
        assert all_texts(sam, room_id) == [f"old {i}" for i in range(HISTORY)]


def test_messages_sent_while_we_were_down_arrive_after_restart(
    backend: str, synapse: SynapseProcess, tmp_path: Path
) -> None:
    with federating_server(backend, tmp_path) as ours:
        alice = new_room_user(ours.url)
        room_id = alice.create_room(preset="public_chat")
        sam = synapse.register()
        join_via(sam, room_id, ours.server_name)
        sam.send_text(room_id, "before")
        eventually(sees_text(alice, room_id, "before"), "the first message")
        ours.stop()
        for i in range(5):
            sam.send_text(room_id, f"while down {i}")
        ours.start()
        eventually(sees_text(alice, room_id, "while down 4"), "the latest message, after the restart")
        texts = all_texts(alice, room_id)
        assert texts[texts.index("before") :] == ["before", *[f"while down {i}" for i in range(5)]]

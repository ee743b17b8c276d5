"""The presence table and the shared-room lookups presence uses, on both engines."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homeserver.app import HomeServer
from homeserver.core.requester import Requester
from homeserver.handlers.room_creation import CreateRoomRequest
from homeserver.storage.presence import PresenceRow, PresenceStore
from tests.inline import inline_server, resolve

ALICE, BOB, CAROL, DAVE = (Requester(f"@{name}:localhost", "DEV") for name in ("alice", "bob", "carol", "dave"))


@pytest.fixture
def hs(database_section: dict[str, Any], tmp_path: Path) -> Iterator[HomeServer]:
    server = inline_server(database_section, tmp_path)
    yield server
    server.db.close()


def test_a_row_only_moves_forward_on_the_stream(hs: HomeServer) -> None:
    store = PresenceStore(hs.db)
    resolve(store.store(PresenceRow(ALICE.user_id, "online", "new", 2000, True, 5)))
    resolve(store.store(PresenceRow(ALICE.user_id, "offline", "old", 1000, False, 4)))  # a late, older write
    resolve(store.store(PresenceRow(BOB.user_id, "unavailable", None, 1500, False, 3)))
    rows = {r.user_id: r for r in resolve(store.load_all())}
    assert rows[ALICE.user_id] == PresenceRow(ALICE.user_id, "online", "new", 2000, True, 5)
    assert rows[BOB.user_id] == PresenceRow(BOB.user_id, "unavailable", None, 1500, False, 3)
    resolve(store.store(PresenceRow(ALICE.user_id, "offline", None, 2000, False, 6)))
    assert {r.user_id: r for r in resolve(store.load_all())}[ALICE.user_id].state == "offline"


def test_who_shares_a_room(hs: HomeServer) -> None:
    store = PresenceStore(hs.db)
    room, _ = resolve(hs.room_creation.create_room(ALICE, CreateRoomRequest(preset="public_chat")))
    resolve(hs.membership.join(BOB, room))
    resolve(hs.membership.join(CAROL, room))
    resolve(hs.membership.leave(CAROL, room))
    assert resolve(store.share_a_room(ALICE.user_id, BOB.user_id))
    assert not resolve(store.share_a_room(ALICE.user_id, CAROL.user_id))  # left
    assert not resolve(store.share_a_room(ALICE.user_id, DAVE.user_id))  # never joined

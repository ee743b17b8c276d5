"""Room state is read lazily: an auth check loads the few state pairs the rules need, never the room."""

from pathlib import Path
from typing import Any

from homeserver.core.requester import Requester
from homeserver.handlers.room_creation import CreateRoomRequest
from tests.inline import inline_server, resolve

MEMBERS = 5000


def test_auth_check_in_a_room_of_5000_members_loads_a_handful_of_events(
    database_section: dict[str, Any], tmp_path: Path
) -> None:
    seeding = inline_server(database_section, tmp_path)
    owner = Requester("@owner:localhost", "DEV")
    room_id, _ = resolve(seeding.room_creation.create_room(owner, CreateRoomRequest(preset="public_chat")))
    for n in range(MEMBERS):
        resolve(seeding.membership.join(Requester(f"@member{n}:localhost", "DEV"), room_id))
    assert len(resolve(seeding.rooms.member_event_ids(room_id))) == MEMBERS + 1
    seeding.db.close()

    # A fresh process: empty caches, so every event and state row it needs comes from the database.
    hs = inline_server(database_section, tmp_path)
    resolve(
        hs.messages.send(
            Requester("@member42:localhost", "DEV"),
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "hi"},
            "txn1",
        )
    )
    # create, power levels, the sender's membership: the auth check's state, and nothing else.
    assert hs.events.events_loaded <= 4
    assert hs.state.rows_read <= 4

    # A join (which also needs the join rules and the target's membership) stays as small.
    resolve(hs.membership.join(Requester("@newcomer:localhost", "DEV"), room_id))
    assert hs.events.events_loaded <= 4 + 6
    assert hs.state.rows_read <= 4 + 6
    hs.db.close()


def test_state_storage_grows_with_state_changes_not_messages(database_section: dict[str, Any], tmp_path: Path) -> None:
    hs = inline_server(database_section, tmp_path)
    owner = Requester("@owner:localhost", "DEV")
    room_id, _ = resolve(hs.room_creation.create_room(owner, CreateRoomRequest(preset="public_chat")))

    def counts() -> tuple[int, int]:
        return hs.db.run_blocking(
            "t",
            lambda txn: (
                txn.execute("SELECT count(*) FROM state_groups").fetchone()[0],
                txn.execute("SELECT count(*) FROM state_group_entries").fetchone()[0],
            ),
        )

    before = counts()
    for n in range(200):
        resolve(hs.messages.send(owner, room_id, "m.room.message", {"msgtype": "m.text", "body": str(n)}, f"t{n}"))
    assert counts() == before  # 200 messages, not one new state row
    resolve(hs.membership.join(Requester("@x:localhost", "DEV"), room_id))
    groups, entries = counts()
    assert (groups, entries) == (before[0] + 1, before[1] + 1)  # one delta row for one state change
    hs.db.close()

"""When a room's forward extremities diverge, the next event is built on their resolved state."""

from pathlib import Path
from typing import Any

from homeserver.core.requester import Requester
from homeserver.handlers.room_creation import CreateRoomRequest
from tests.inline import inline_server, resolve

OWNER = Requester("@owner:localhost", "DEV")


def fork(hs: Any, room_id: str, changes: list[tuple[str, dict]]) -> list[str]:
    """Persist each state change on the same parent, as two writers racing would."""
    (extremity,) = resolve(hs.events.get_forward_extremities(room_id))
    _, room_version = resolve(hs.room_sender.get_room(room_id))
    ids = []
    for event_type, content in changes:
        needed = {("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", OWNER.user_id)}
        auth_state = resolve(hs.room_sender.load_state(extremity.state_group, needed))
        event = hs.room_sender.build(
            room_version,
            room_id,
            OWNER.user_id,
            event_type,
            content,
            "",
            None,
            prev_event_ids=[extremity.event_id],
            depth=extremity.depth + 1,
            auth_state=auth_state,
        )
        resolve(hs.events.persist(event, extremity.state_group, {(event_type, ""): event.event_id}))
        ids.append(event.event_id)
    return ids


def test_the_next_event_merges_both_branches(database_section: dict[str, Any], tmp_path: Path) -> None:
    hs = inline_server(database_section, tmp_path)
    room_id, _ = resolve(hs.room_creation.create_room(OWNER, CreateRoomRequest(preset="public_chat")))
    topic_id, name_id = fork(hs, room_id, [("m.room.topic", {"topic": "a"}), ("m.room.name", {"name": "b"})])
    assert len(resolve(hs.events.get_forward_extremities(room_id))) == 2

    event_id = resolve(hs.messages.send(OWNER, room_id, "m.room.message", {"msgtype": "m.text", "body": "x"}, "t"))
    event = resolve(hs.events.get_event(event_id))
    assert sorted(event.prev_event_ids) == sorted([topic_id, name_id])
    group, _ = resolve(hs.events.get_state_group_of(event_id))
    state = resolve(hs.state.get_state_ids(group))
    assert state[("m.room.topic", "")] == topic_id and state[("m.room.name", "")] == name_id
    assert [e.event_id for e in resolve(hs.events.get_forward_extremities(room_id))] == [event_id]
    hs.db.close()


def test_a_conflict_resolves_to_one_side_for_everyone(database_section: dict[str, Any], tmp_path: Path) -> None:
    hs = inline_server(database_section, tmp_path)
    room_id, _ = resolve(hs.room_creation.create_room(OWNER, CreateRoomRequest(preset="public_chat")))
    first, second = fork(hs, room_id, [("m.room.topic", {"topic": "a"}), ("m.room.topic", {"topic": "b"})])
    resolve(hs.messages.send(OWNER, room_id, "m.room.message", {"msgtype": "m.text", "body": "x"}, "t"))
    (extremity,) = resolve(hs.events.get_forward_extremities(room_id))
    winner = resolve(hs.state.get_state_ids(extremity.state_group, [("m.room.topic", "")]))[("m.room.topic", "")]
    assert winner in (first, second)
    # Current state agrees with the resolved group.
    assert resolve(hs.rooms.get_current_state_id(room_id, "m.room.topic", "")) == winner
    hs.db.close()


def test_a_fork_that_resolves_to_an_existing_state_shares_its_group(
    database_section: dict[str, Any], tmp_path: Path
) -> None:
    hs = inline_server(database_section, tmp_path)
    room_id, _ = resolve(hs.room_creation.create_room(OWNER, CreateRoomRequest(preset="public_chat")))
    (extremity,) = resolve(hs.events.get_forward_extremities(room_id))
    _, room_version = resolve(hs.room_sender.get_room(room_id))
    needed = {("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", OWNER.user_id)}
    auth_state = resolve(hs.room_sender.load_state(extremity.state_group, needed))

    def on_parent(event_type: str, content: dict, state_key: str | None) -> Any:
        return hs.room_sender.build(
            room_version,
            room_id,
            OWNER.user_id,
            event_type,
            content,
            state_key,
            None,
            prev_event_ids=[extremity.event_id],
            depth=extremity.depth + 1,
            auth_state=auth_state,
        )

    # One branch sets a topic, the other only talks: the resolution is the topic branch's state.
    topic = on_parent("m.room.topic", {"topic": "kept"}, "")
    resolve(hs.events.persist(topic, extremity.state_group, {("m.room.topic", ""): topic.event_id}))
    message = on_parent("m.room.message", {"msgtype": "m.text", "body": "b"}, None)
    resolve(hs.events.persist(message, extremity.state_group, None))

    def count() -> int:
        return hs.db.run_blocking("t", lambda txn: txn.execute("SELECT count(*) FROM state_groups").fetchone()[0])

    groups_before = count()
    event_id = resolve(hs.messages.send(OWNER, room_id, "m.room.message", {"msgtype": "m.text", "body": "c"}, "t"))
    assert count() == groups_before  # no new group: the topic branch's is reused
    group, _ = resolve(hs.events.get_state_group_of(event_id))
    assert group == resolve(hs.events.get_state_group_of(topic.event_id))[0]
    assert resolve(hs.rooms.get_current_state_id(room_id, "m.room.topic", "")) == topic.event_id
    hs.db.close()

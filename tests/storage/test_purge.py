"""Admin purges driven inline on both engines: what goes, what stays, and that a purge cut short between
batches leaves a readable room and finishes when run again."""

from pathlib import Path
from typing import Any

import pytest

from homeserver.app import HomeServer
from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.handlers.admin.purges import Purge, PurgeReport
from homeserver.handlers.batches import Batches, BatchPace, blocking_sleep
from homeserver.handlers.room_creation import CreateRoomRequest
from tests.inline import inline_server, resolve

ALICE = Requester("@alice:localhost", "A")
BOB = Requester("@bob:localhost", "B")
CAROL = Requester("@carol:localhost", "C")


class Interrupted(Exception):
    """Stands for the process dying between two batches."""


@pytest.fixture
def hs(database_section: dict[str, Any], tmp_path: Path) -> Any:
    server = inline_server(database_section, tmp_path)
    for requester in (ALICE, BOB, CAROL):
        resolve(server.accounts.create_user(requester.user_id, None))
    yield server
    server.db.close()


def run(hs: HomeServer, purge: Purge, size: int = 3, stop_after: int | None = None) -> PurgeReport:
    """Run a purge in batches of `size`; with `stop_after`, die in the pause after that many batches."""
    pauses = 0

    async def sleep(seconds: float) -> None:
        nonlocal pauses
        pauses += 1
        if stop_after is not None and pauses > stop_after:
            raise Interrupted()
        await blocking_sleep(0)

    report = PurgeReport(planned=resolve(purge.plan()))
    resolve(purge.run(Batches(hs.db, sleep, BatchPace(size, 0)), report))
    return report


def send(hs: HomeServer, requester: Requester, room_id: str, text: str) -> str:
    content = {"msgtype": "m.text", "body": text}
    return resolve(hs.messages.send(requester, room_id, "m.room.message", content, text))


def rows(hs: HomeServer, sql: str, *args: Any) -> list[tuple]:
    return hs.db.run_blocking("test", lambda txn: txn.execute(sql, args).fetchall())


def room_event_ids(hs: HomeServer, room_id: str) -> set[str]:
    return {r[0] for r in rows(hs, "SELECT event_id FROM events WHERE room_id = ?", room_id)}


def busy_room(hs: HomeServer, messages: int = 12) -> tuple[str, list[str]]:
    """Alice's room with Bob and Carol in it, a topic change halfway and `messages` messages from Alice."""
    room_id, _ = resolve(hs.room_creation.create_room(ALICE, CreateRoomRequest(preset="public_chat", topic="one")))
    resolve(hs.membership.join(BOB, room_id))
    resolve(hs.membership.join(CAROL, room_id))
    sent = []
    for i in range(messages):
        if i == messages // 2:
            resolve(hs.room_sender.send(room_id, ALICE.user_id, "m.room.topic", {"topic": "two"}, ""))
        sent.append(send(hs, ALICE, room_id, f"message {i}"))
    return room_id, sent


def snapshot(hs: HomeServer, room_id: str) -> dict[str, Any]:
    """What no purge of the room's history may change."""
    return {
        "current_state": resolve(hs.rooms.current_state_map(room_id)),
        "state_groups": rows(hs, "SELECT id, prev_group FROM state_groups WHERE room_id = ? ORDER BY id", room_id),
        "state_events": rows(
            hs, "SELECT event_id FROM events WHERE room_id = ? AND state_key IS NOT NULL ORDER BY event_id", room_id
        ),
    }


def messages_back(hs: HomeServer, requester: Requester, room_id: str) -> list[dict]:
    """The whole timeline read backwards through /messages, newest first."""
    chunk, token = [], None
    while True:
        page = resolve(
            hs.room_reads.messages(
                requester, room_id, from_token=token, to_token=None, backwards=True, limit=4, event_filter=None
            )
        )
        chunk += page["chunk"]
        if "end" not in page:
            return chunk
        token = page["end"]


def test_history_purge_before_an_event_keeps_state_and_everything_after(hs: HomeServer) -> None:
    room_id, sent = busy_room(hs)
    other_room, other_sent = busy_room(hs, messages=3)
    before = snapshot(hs, room_id)
    cut = sent[8]
    purge = resolve(hs.purges.history(room_id, None, cut))
    planned = resolve(purge.plan())
    assert planned["events"] == 8  # messages 0..7; the joins, topics and create stay

    report = run(hs, purge)
    assert report.deleted["events"] == 8
    remaining = room_event_ids(hs, room_id)
    assert not remaining & set(sent[:8])
    assert set(sent[8:]) <= remaining
    assert snapshot(hs, room_id) == before
    assert set(other_sent) <= room_event_ids(hs, other_room)
    # Bob's notifications for the purged messages went, the later ones stayed.
    actions = rows(
        hs, "SELECT event_id FROM event_push_actions WHERE user_id = ? AND room_id = ?", BOB.user_id, room_id
    )
    assert {a[0] for a in actions} == set(sent[8:])
    assert resolve(hs.push_store.unread_counts(BOB.user_id))[room_id][0] == len(sent[8:])

    # The room works: reads back to the cut without errors, takes new events.
    timeline = messages_back(hs, BOB, room_id)
    bodies = [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"]
    assert bodies == [f"message {i}" for i in reversed(range(8, 12))]
    assert all(e.get("state_key") is not None for e in timeline if e["type"] != "m.room.message")
    send(hs, BOB, room_id, "after the purge")
    resolve(hs.membership.leave(CAROL, room_id))
    assert resolve(resolve(hs.purges.history(room_id, None, cut)).plan())["events"] == 0


def test_history_purge_before_a_time_takes_what_was_sent_earlier(hs: HomeServer) -> None:
    room_id, sent = busy_room(hs)
    ts = {e.event_id: e.origin_server_ts for e in resolve(hs.events.get_events(room_event_ids(hs, room_id))).values()}
    before_ts = ts[sent[6]]
    run(hs, resolve(hs.purges.history(room_id, before_ts, None)))
    remaining = room_event_ids(hs, room_id)
    assert {e for e in sent if ts[e] >= before_ts} <= remaining
    assert all(ts[e] < before_ts for e in set(sent) - remaining)
    # A time after everything leaves the newest event (new events are built on it) and the state.
    run(hs, resolve(hs.purges.history(room_id, 2**62, None)))
    assert room_event_ids(hs, room_id) & set(sent) == {sent[-1]}
    send(hs, ALICE, room_id, "still works")


def test_a_redaction_of_kept_state_is_kept(hs: HomeServer) -> None:
    room_id, sent = busy_room(hs, messages=2)
    topic = resolve(hs.rooms.get_current_state_id(room_id, "m.room.topic", ""))
    redaction = resolve(hs.messages.redact(ALICE, room_id, topic, None, "r1"))
    redacted_message = resolve(hs.messages.redact(ALICE, room_id, sent[0], None, "r2"))
    last = send(hs, ALICE, room_id, "last")
    run(hs, resolve(hs.purges.history(room_id, None, last)))
    remaining = room_event_ids(hs, room_id)
    assert redaction in remaining and topic in remaining
    assert redacted_message not in remaining and sent[0] not in remaining
    assert rows(hs, "SELECT event_id FROM redactions WHERE redacts = ?", sent[0]) == []
    state = resolve(hs.room_reads.state(BOB, room_id))
    (served,) = [e for e in state if e["type"] == "m.room.topic"]
    assert served["content"] == {}  # still redacted


def test_an_interrupted_history_purge_leaves_a_readable_room_and_finishes_when_run_again(hs: HomeServer) -> None:
    room_id, sent = busy_room(hs, messages=20)
    before = snapshot(hs, room_id)
    with pytest.raises(Interrupted):
        run(hs, resolve(hs.purges.history(room_id, None, sent[15])), size=2, stop_after=18)
    remaining = room_event_ids(hs, room_id)
    assert 0 < len(set(sent[:15]) & remaining) < 15
    assert set(sent[15:]) <= remaining and snapshot(hs, room_id) == before
    messages_back(hs, BOB, room_id)  # readable in between
    send(hs, BOB, room_id, "in between")

    report = run(hs, resolve(hs.purges.history(room_id, None, sent[15])), size=2)
    assert report.deleted["events"] == len(set(sent[:15]) & remaining)
    assert not room_event_ids(hs, room_id) & set(sent[:15])
    assert snapshot(hs, room_id)["state_groups"] == before["state_groups"]


def test_history_purge_refuses_what_it_cannot_purge(hs: HomeServer) -> None:
    room_id, sent = busy_room(hs, messages=1)
    other_room, other_sent = busy_room(hs, messages=1)
    cases = [
        (("!nope:localhost", None, sent[0]), 404, "Unknown room"),
        ((room_id, None, "$nope"), 404, "Unknown event"),
        ((room_id, None, other_sent[0]), 404, "Unknown event"),
        ((room_id, -1, None), 400, "before_ts"),
        ((room_id, None, None), 400, "exactly one"),
        ((room_id, 5, sent[0]), 400, "exactly one"),
    ]
    for args, code, words in cases:
        with pytest.raises(MatrixError) as caught:
            resolve(hs.purges.history(*args))
        assert caught.value.code == code and words in caught.value.msg, args


def table_counts(hs: HomeServer, room_id: str) -> dict[str, int]:
    return resolve(hs.purges._store.count_room(room_id, [ALICE.user_id, BOB.user_id, CAROL.user_id]))


def furnished_room(hs: HomeServer) -> tuple[str, list[str]]:
    """A room with something in every table a room owns: an alias, receipts, room account data, a
    forgotten membership, push actions."""
    room_id, _ = resolve(
        hs.room_creation.create_room(ALICE, CreateRoomRequest(preset="public_chat", room_alias_name="doomed"))
    )
    resolve(hs.membership.join(BOB, room_id))
    resolve(hs.membership.join(CAROL, room_id))
    sent = [send(hs, ALICE, room_id, f"message {i}") for i in range(6)]
    resolve(hs.receipts.receipt(BOB, room_id, "m.read", sent[2], None))
    resolve(hs.account_data.set_room(BOB, BOB.user_id, room_id, "m.tag", {"tags": {}}))
    resolve(hs.membership.leave(CAROL, room_id))
    resolve(hs.membership.forget(CAROL, room_id))
    return room_id, sent


def test_delete_room_removes_every_row_of_the_room_and_nothing_else(hs: HomeServer) -> None:
    room_id, _ = furnished_room(hs)
    other_room, other_sent = busy_room(hs, messages=3)
    other_before = table_counts(hs, other_room)
    planned = resolve(resolve(hs.purges.room_deletion(room_id, ALICE.user_id, block=True)).plan())
    assert planned["members"] == 2  # Alice and Bob leave; Carol left already
    assert all(planned[t] > 0 for t in ("rooms", "events", "receipts", "room_aliases", "room_account_data",
                                         "forgotten_rooms", "event_push_actions", "push_summary", "state_groups"))

    report = run(hs, resolve(hs.purges.room_deletion(room_id, ALICE.user_id, block=True)))
    assert report.errors == []
    assert set(table_counts(hs, room_id).values()) == {0}
    assert report.deleted["events"] == planned["events"] + 2  # with the two leaves
    assert table_counts(hs, other_room) == other_before
    assert set(other_sent) <= room_event_ids(hs, other_room)
    assert resolve(hs.rooms.get_alias("#doomed:localhost")) is None
    assert resolve(hs.rooms.rooms_for_user(BOB.user_id, ("join", "leave"))) == [other_room]
    attempts = (
        hs.membership.join(BOB, room_id),
        hs.membership.invite(ALICE, room_id, BOB.user_id),
        hs.membership.knock(CAROL, room_id),
    )
    for attempt in attempts:
        with pytest.raises(MatrixError) as refused:
            resolve(attempt)
        assert (refused.value.code, refused.value.msg) == (403, "This room has been blocked")
    with pytest.raises(MatrixError) as gone:
        resolve(hs.purges.room_deletion(room_id, ALICE.user_id, block=False))
    assert gone.value.code == 404


@pytest.mark.parametrize("stop_after", [1, 6, 12, 15])
def test_an_interrupted_room_deletion_finishes_when_run_again(hs: HomeServer, stop_after: int) -> None:
    room_id, _ = furnished_room(hs)
    other_room, other_sent = busy_room(hs, messages=3)
    other_before = table_counts(hs, other_room)
    with pytest.raises(Interrupted):
        run(hs, resolve(hs.purges.room_deletion(room_id, ALICE.user_id, block=False)), size=4, stop_after=stop_after)
    # Meanwhile nobody can join it, block or not.
    with pytest.raises(MatrixError) as refused:
        resolve(hs.membership.join(CAROL, room_id))
    assert (refused.value.code, refused.value.msg) == (403, "This room is being deleted")

    run(hs, resolve(hs.purges.room_deletion(room_id, ALICE.user_id, block=False)), size=4)
    assert set(table_counts(hs, room_id).values()) == {0}
    assert table_counts(hs, other_room) == other_before
    with pytest.raises(MatrixError) as unknown:
        resolve(hs.membership.join(CAROL, room_id))
    assert unknown.value.code == 404  # not blocked: simply gone


def test_push_actions_purge_of_a_user_or_a_room_zeroes_their_counts(hs: HomeServer) -> None:
    room_id, _ = busy_room(hs, messages=5)
    other_room, _ = busy_room(hs, messages=4)

    def unread(requester: Requester) -> dict[str, int]:
        return {room: counts[0] for room, counts in resolve(hs.push_store.unread_counts(requester.user_id)).items()}

    assert unread(BOB) == {room_id: 5, other_room: 4}
    purge = resolve(hs.purges.push_actions(BOB.user_id, None))
    assert resolve(purge.plan()) == {"event_push_actions": 9}
    run(hs, purge, size=2)
    assert unread(BOB) == {room_id: 0, other_room: 0} and unread(CAROL) == {room_id: 5, other_room: 4}

    run(hs, resolve(hs.purges.push_actions(None, other_room)), size=2)
    assert unread(CAROL) == {room_id: 5, other_room: 0}
    assert rows(hs, "SELECT count(*) FROM event_push_actions WHERE room_id = ?", room_id) == [(5,)]
    # New notifications count from zero again.
    send(hs, ALICE, other_room, "new")
    assert unread(BOB)[other_room] == 1

    for args, code in [((None, None), 400), (("@nobody:localhost", None), 404), (("nobody", None), 400),
                       ((None, "!nope:localhost"), 404), ((BOB.user_id, room_id), 400)]:
        with pytest.raises(MatrixError) as caught:
            resolve(hs.purges.push_actions(*args))
        assert caught.value.code == code, args

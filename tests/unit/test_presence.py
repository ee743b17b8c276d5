"""The presence state machine on a fake clock: syncs, activity, idle and sync timeouts, what is stored
(only visible changes), the stream positions sync reads, taking up stored presence on start, and presence
to and from other servers."""

from typing import Any

import pytest
from twisted.internet.task import Clock

from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.core.sync_token import SyncToken
from homeserver.handlers.notifier import Notifier
from homeserver.handlers.presence import STORE_BATCH_S, PresenceHandler, Timeouts
from homeserver.storage.presence import PresenceRow
from tests.inline import resolve

ALICE = "@alice:example.org"
BOB = "@bob:example.org"
CAROL = "@carol:example.org"
PAIR = {ALICE, BOB}
RITA = "@rita:remote.example"  # another server's user, in Alice and Bob's room
ROOM = PAIR | {RITA}
TIMEOUTS = Timeouts(idle_ms=300_000, sync_ms=30_000)


class Store:
    """The PresenceStore calls the handler makes, kept in a dict; `writes` counts the rows written."""

    def __init__(self, rows: list[PresenceRow] | None = None) -> None:
        self.rows = {r.user_id: r for r in rows or []}
        self.writes = 0

    async def load_all(self) -> list[PresenceRow]:
        return list(self.rows.values())

    async def store(self, row: PresenceRow) -> None:
        await self.store_many([row])

    async def store_many(self, rows: list[PresenceRow]) -> None:
        self.writes += len(rows)
        self.rows.update((row.user_id, row) for row in rows)

    async def share_a_room(self, user_id: str, other_id: str) -> bool:
        return {user_id, other_id} <= ROOM


class Rooms:
    """Alice, Bob and Rita share a room; Carol shares none."""

    async def users_sharing_rooms(self, user_id: str) -> set[str]:
        return set(ROOM) if user_id in ROOM else set()

    async def member_event_ids(self, room_id: str) -> dict[str, str]:
        return {user_id: f"$join-{user_id}" for user_id in ROOM}

    async def remote_users_sharing_rooms(self, user_ids: list[str], local_server: str) -> dict[str, set[str]]:
        remote = {u for u in ROOM if not u.endswith(":" + local_server)}
        return {u: remote for u in user_ids if u in ROOM and remote}


class Accounts:
    async def get_user(self, user_id: str) -> Any:
        return object() if user_id in (ALICE, BOB, CAROL) else None


def requester(user_id: str) -> Requester:
    return Requester(user_id=user_id, device_id="DEV")


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_000_000)  # a wall clock far from 0: last_active_ts 0 means "never"
    return clock


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def handler(clock: Clock, store: Store) -> PresenceHandler:
    return make_handler(clock, store)


def make_handler(clock: Clock, store: Store, enabled: bool = True) -> PresenceHandler:
    s: Any = store
    rooms: Any = Rooms()
    accounts: Any = Accounts()
    return PresenceHandler(clock, s, rooms, accounts, TIMEOUTS, enabled, server_name="example.org")


def state(handler: PresenceHandler, user_id: str = ALICE) -> dict[str, Any]:
    return resolve(handler.get_status(requester(user_id), user_id))


def test_a_sync_brings_an_offline_user_online_and_its_end_starts_the_sync_timeout(
    handler: PresenceHandler, clock: Clock, store: Store
) -> None:
    assert state(handler) == {"presence": "offline"}
    handler.sync_started(ALICE, "online")
    assert state(handler) == {"presence": "online", "last_active_ago": 0, "currently_active": True}
    clock.advance(100)  # a long sync open: no timeout
    assert state(handler)["presence"] == "online"
    handler.sync_ended(ALICE, "online")
    clock.advance(29.9)
    assert state(handler)["presence"] == "online"
    clock.advance(0.1)
    assert state(handler)["presence"] == "offline"
    assert store.rows[ALICE].state == "online"  # written with the changes of the next STORE_BATCH_S
    clock.advance(STORE_BATCH_S)
    assert store.rows[ALICE].state == "offline"


def test_syncs_write_nothing_while_nothing_visible_changes(
    handler: PresenceHandler, clock: Clock, store: Store
) -> None:
    handler.sync_started(ALICE, "online")
    handler.sync_ended(ALICE, "online")
    clock.advance(STORE_BATCH_S)
    writes = store.writes
    for _ in range(100):
        clock.advance(1)
        handler.sync_started(ALICE, "online")
        handler.sync_ended(ALICE, "online")
        handler.user_active(ALICE)
    assert store.writes == writes


def test_no_activity_makes_unavailable_and_a_sync_does_not_count_as_activity(
    handler: PresenceHandler, clock: Clock
) -> None:
    handler.sync_started(ALICE, "online")
    clock.advance(60)
    assert state(handler)["currently_active"] is False  # Synapse's one-minute granularity
    assert state(handler)["presence"] == "online"
    handler.sync_ended(ALICE, "online")
    handler.sync_started(ALICE, "online")  # the client keeps syncing
    clock.advance(240)
    assert state(handler)["presence"] == "unavailable"
    assert state(handler)["last_active_ago"] == 300_000
    handler.sync_ended(ALICE, "online")
    handler.sync_started(ALICE, "online")
    assert state(handler)["presence"] == "unavailable"
    handler.user_active(ALICE)  # a message sent
    assert state(handler) == {"presence": "online", "last_active_ago": 0, "currently_active": True}


def test_set_presence_offline_leaves_presence_alone(handler: PresenceHandler, clock: Clock) -> None:
    handler.sync_started(ALICE, "offline")
    assert state(handler)["presence"] == "offline"
    handler.sync_ended(ALICE, "offline")
    handler.sync_started(ALICE, "unavailable")
    assert state(handler)["presence"] == "unavailable"
    handler.sync_ended(ALICE, "unavailable")
    clock.advance(30)
    assert state(handler)["presence"] == "offline"


def test_a_user_who_chose_offline_stays_offline_when_sending(handler: PresenceHandler, clock: Clock) -> None:
    resolve(handler.set_status(requester(ALICE), ALICE, "offline", None))
    handler.user_active(ALICE)
    assert state(handler)["presence"] == "offline"


def test_put_sets_state_and_status_message_and_counts_as_a_sync(
    handler: PresenceHandler, clock: Clock, store: Store
) -> None:
    resolve(handler.set_status(requester(ALICE), ALICE, "online", "at lunch"))
    assert state(handler) == {
        "presence": "online",
        "last_active_ago": 0,
        "status_msg": "at lunch",
        "currently_active": True,
    }
    assert (store.rows[ALICE].state, store.rows[ALICE].status_msg) == ("online", "at lunch")
    resolve(handler.set_status(requester(ALICE), ALICE, "unavailable", None))
    assert state(handler) == {"presence": "unavailable", "last_active_ago": 0}
    clock.advance(30)  # nobody syncs
    assert state(handler)["presence"] == "offline"


def test_others_may_not_set_and_strangers_may_not_read(handler: PresenceHandler) -> None:
    with pytest.raises(MatrixError) as e:
        resolve(handler.set_status(requester(BOB), ALICE, "online", None))
    assert (e.value.code, e.value.errcode) == (403, "M_FORBIDDEN")
    resolve(handler.set_status(requester(ALICE), ALICE, "online", "hi"))
    assert resolve(handler.get_status(requester(BOB), ALICE))["status_msg"] == "hi"
    with pytest.raises(MatrixError) as e:
        resolve(handler.get_status(requester(CAROL), ALICE))
    assert (e.value.code, e.value.errcode) == (403, "M_FORBIDDEN")
    with pytest.raises(MatrixError) as e:
        resolve(handler.get_status(requester(ALICE), "@nobody:example.org"))
    assert (e.value.code, e.value.errcode) == (404, "M_NOT_FOUND")


def test_each_visible_change_moves_the_stream_and_sync_finds_who_changed(
    handler: PresenceHandler, clock: Clock
) -> None:
    start = handler.presence_position()
    handler.sync_started(ALICE, "online")
    after_alice = handler.presence_position()
    assert after_alice > start
    handler.sync_started(BOB, "online")
    now = handler.presence_position()
    assert handler.changed_since(start, now) == {ALICE, BOB}
    assert handler.changed_since(after_alice, now) == {BOB}
    assert handler.changed_since(now, now) == set()
    handler.sync_ended(BOB, "online")
    clock.advance(30)  # bob times out
    later = handler.presence_position()
    assert handler.changed_since(now, later) == {BOB}
    assert [e["sender"] for e in handler.events({ALICE, BOB}, include_offline=False)] == [ALICE]
    events = handler.events({ALICE, BOB}, include_offline=True)
    assert [(e["sender"], e["content"]["presence"]) for e in events] == [(ALICE, "online"), (BOB, "offline")]
    assert events[0]["type"] == "m.presence"


def test_a_change_wakes_the_syncs_of_users_sharing_a_room(handler: PresenceHandler, clock: Clock) -> None:
    notifier = Notifier(clock, Rooms().users_sharing_rooms)
    handler.notifier = notifier
    listener = notifier.listen(BOB)
    handler.sync_started(ALICE, "online")
    assert listener.deferred.called and listener.deferred.result is True


def test_start_takes_up_stored_presence_and_times_out_who_does_not_come_back(clock: Clock) -> None:
    now_ms = int(clock.seconds() * 1000)
    store = Store(
        [
            PresenceRow(ALICE, "online", "back soon", now_ms - 10_000, True, 7),
            PresenceRow(BOB, "offline", "gone fishing", now_ms - 999_000, False, 4),
        ]
    )
    handler = make_handler(clock, store)
    resolve(handler.start())
    assert handler.presence_position() == 7  # the stream goes on where it was
    assert state(handler)["status_msg"] == "back soon"
    assert state(handler, BOB) == {"presence": "offline", "last_active_ago": 999_000, "status_msg": "gone fishing"}
    clock.advance(30)  # alice never synced again
    assert state(handler)["presence"] == "offline"
    clock.advance(STORE_BATCH_S)
    assert store.rows[ALICE].state == "offline" and store.rows[ALICE].stream_id == 8


def test_a_user_back_within_the_sync_timeout_after_a_restart_stays_online(clock: Clock) -> None:
    now_ms = int(clock.seconds() * 1000)
    store = Store([PresenceRow(ALICE, "online", None, now_ms - 1_000, True, 3)])
    handler = make_handler(clock, store)
    resolve(handler.start())
    clock.advance(5)
    handler.sync_started(ALICE, "online")
    clock.advance(100)
    clock.advance(STORE_BATCH_S)
    assert state(handler)["presence"] == "online"
    assert store.writes == 1  # currently_active went false after its minute; nothing else


def test_disabled_presence_stores_nothing_and_answers_offline(clock: Clock, store: Store) -> None:
    handler = make_handler(clock, store, enabled=False)
    resolve(handler.set_status(requester(ALICE), ALICE, "online", "hi"))
    assert store.writes == 0
    assert state(handler) == {"presence": "offline"}
    assert clock.getDelayedCalls() == []


def test_a_sync_gets_the_presence_of_users_sharing_a_room_and_of_newcomers(
    handler: PresenceHandler, clock: Clock
) -> None:
    for user_id in (ALICE, BOB, CAROL):
        handler.sync_started(user_id, "online")
    position = handler.presence_position()
    assert [e["sender"] for e in handler.events_for(BOB, None, position, {ALICE})] == [ALICE, BOB]
    assert [e["sender"] for e in handler.events_for(CAROL, None, position, set())] == [CAROL]
    resolve(handler.set_status(requester(ALICE), ALICE, "unavailable", "away"))
    resolve(handler.set_status(requester(CAROL), CAROL, "unavailable", "away"))
    now = handler.presence_position()
    changed = handler.events_for(BOB, position, now, {ALICE})
    assert [(e["sender"], e["content"]["presence"]) for e in changed] == [(ALICE, "unavailable")]
    assert [e["sender"] for e in handler.events_for(CAROL, position, now, set())] == [CAROL]
    assert handler.events_for(BOB, now, now, {ALICE}) == []
    # Carol joins a room with Bob: her presence comes though it did not change since the token.
    joined = handler.events_for(BOB, now, now, {ALICE, CAROL}, newcomers={CAROL})
    assert [(e["sender"], e["content"]["status_msg"]) for e in joined] == [(CAROL, "away")]


def test_sync_tokens_carry_presence_and_old_six_field_tokens_still_parse() -> None:
    token = SyncToken(1, 2, 3, 4, 5, 6, 7)
    assert str(token) == "s1_2_3_4_5_6_7" and SyncToken.parse(str(token)) == token
    assert SyncToken.parse("s1_2_3_4_5_6") == SyncToken(1, 2, 3, 4, 5, 6, presence=0)
    for bad in ("s1_2_3_4_5", "s1_2_3_4_5_6_7_8", "s1_2_3_4_5_6_x"):
        with pytest.raises(MatrixError):
            SyncToken.parse(bad)


# -- over federation -----------------------------------------------------------------------------------


def test_our_changes_go_to_servers_sharing_a_room_in_one_batch(handler: PresenceHandler, clock: Clock) -> None:
    sent: list[tuple[str, str, dict]] = []
    handler.federation = lambda destination, edu_type, content: sent.append((destination, edu_type, content))
    resolve(handler.set_status(requester(ALICE), ALICE, "online", "hi"))
    handler.sync_started(BOB, "online")
    handler.sync_started(CAROL, "online")  # shares no room with another server's user
    assert sent == []
    clock.advance(0.2)
    assert len(sent) == 1
    destination, edu_type, content = sent[0]
    assert (destination, edu_type) == ("remote.example", "m.presence")
    assert content["push"] == [
        {"user_id": ALICE, "last_active_ago": 200, "presence": "online", "status_msg": "hi", "currently_active": True},
        {"user_id": BOB, "last_active_ago": 200, "presence": "online", "currently_active": True},
    ]
    handler.sync_started(ALICE, "online")  # nothing visible changed: nothing sent
    clock.advance(1)
    assert len(sent) == 1


def test_our_users_not_offline_are_sent_again_every_25_minutes(clock: Clock, store: Store) -> None:
    handler = make_handler(clock, store)
    sent: list[str] = []
    handler.federation = lambda destination, edu_type, content: sent.extend(p["presence"] for p in content["push"])
    resolve(handler.start())
    handler.sync_started(ALICE, "online")  # kept from going offline by an open sync
    for _ in range(25):
        clock.advance(60)
    assert sent == ["online", "online", "unavailable"]  # then currently_active false, then idle
    clock.advance(1)
    assert sent == ["online", "online", "unavailable", "unavailable"]


def test_a_join_brings_a_server_newly_in_the_room_our_members_presence(handler: PresenceHandler, clock: Clock) -> None:
    resolve(handler.set_status(requester(ALICE), ALICE, "online", "here"))
    resolve(handler.set_status(requester(BOB), BOB, "offline", None))
    sent: list[tuple[str, str, dict]] = []
    handler.federation = lambda destination, edu_type, content: sent.append((destination, edu_type, content))
    handler.members_joined("!room:example.org", [RITA])
    assert [(d, [p["user_id"] for p in c["push"]]) for d, _, c in sent] == [("remote.example", [ALICE])]
    handler.members_joined("!room:example.org", [ALICE])  # one of ours: to every server sharing a room
    clock.advance(0.2)
    assert [(d, [p["user_id"] for p in c["push"]]) for d, _, c in sent[1:]] == [("remote.example", [ALICE])]


def test_remote_presence_moves_the_stream_and_times_out_only_without_news(
    handler: PresenceHandler, clock: Clock
) -> None:
    before = handler.presence_position()
    push = {
        "user_id": RITA,
        "presence": "online",
        "last_active_ago": 5000,
        "currently_active": True,
        "status_msg": "yo",
    }
    resolve(handler.remote_update("remote.example", [push]))
    assert handler.presence_position() == before + 1
    assert handler.changed_since(before, handler.presence_position()) == {RITA}
    clock.advance(1500)  # no idle or sync timeout for another server's user: its server says
    seen = resolve(handler.get_status(requester(ALICE), RITA))
    assert (seen["presence"], seen["status_msg"], seen["last_active_ago"]) == ("online", "yo", 1_505_000)
    resolve(handler.remote_update("remote.example", [push | {"last_active_ago": 10}]))  # its server's ping
    assert handler.presence_position() == before + 1
    clock.advance(1799)
    assert resolve(handler.get_status(requester(ALICE), RITA))["presence"] == "online"
    clock.advance(1)  # 30 minutes without news: offline here
    assert resolve(handler.get_status(requester(ALICE), RITA))["presence"] == "offline"
    assert handler.presence_position() == before + 2


def test_remote_presence_of_strangers_or_other_servers_users_is_dropped(handler: PresenceHandler) -> None:
    before = handler.presence_position()
    pushes = [
        {"user_id": RITA, "presence": "online"},  # not from Rita's server
        {"user_id": "@zed:remote.example", "presence": "online"},  # shares no room with ours
        {"user_id": RITA, "presence": "dancing"},
        "not an object",
    ]
    resolve(handler.remote_update("elsewhere.example", pushes[:1]))
    resolve(handler.remote_update("remote.example", pushes[1:]))
    assert handler.presence_position() == before
    assert handler.events({RITA, "@zed:remote.example"}, include_offline=True) == []

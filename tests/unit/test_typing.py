"""The typing handler on a fake clock: who is typing, expiry, the serial position, waking syncs."""

from collections.abc import Iterable
from typing import Any

import pytest
from twisted.internet.task import Clock

from homeserver.core.errors import MatrixError
from homeserver.core.requester import Requester
from homeserver.handlers.notifier import Notifier
from homeserver.handlers.typing import MAX_TIMEOUT_MS, TypingHandler
from tests.inline import resolve

ROOM = "!room:example.org"
OTHER_ROOM = "!other:example.org"
ALICE = "@alice:example.org"
BOB = "@bob:example.org"


class Memberships:
    """The one RoomStore call the handler makes, answered from a dict."""

    def __init__(self, joined: dict[str, set[str]]) -> None:
        self.joined = joined

    async def get_membership(self, room_id: str, user_id: str) -> tuple[str, str] | None:
        return ("join", "$member") if user_id in self.joined.get(room_id, set()) else None


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def handler(clock: Clock) -> TypingHandler:
    rooms: Any = Memberships({ROOM: {ALICE, BOB}, OTHER_ROOM: {ALICE}})
    return TypingHandler(clock, rooms)


def test_typing_shows_until_the_timeout_passes(handler: TypingHandler, clock: Clock) -> None:
    handler.started(ROOM, ALICE, 10_000)
    assert handler.typing_in_room(ROOM) == [ALICE]
    clock.advance(9.9)
    assert handler.typing_in_room(ROOM) == [ALICE]
    clock.advance(0.1)
    assert handler.typing_in_room(ROOM) == []


def test_every_change_moves_the_position_including_expiry(handler: TypingHandler, clock: Clock) -> None:
    start = handler.typing_position()
    handler.started(ROOM, ALICE, 5_000)
    started = handler.typing_position()
    assert started > start
    clock.advance(5)
    assert handler.typing_position() > started
    assert handler.rooms_changed_since(started) == {ROOM}


def test_typing_again_extends_the_expiry_without_a_change(handler: TypingHandler, clock: Clock) -> None:
    handler.started(ROOM, ALICE, 10_000)
    position = handler.typing_position()
    clock.advance(8)
    handler.started(ROOM, ALICE, 10_000)
    assert handler.typing_position() == position
    clock.advance(8)
    assert handler.typing_in_room(ROOM) == [ALICE]
    clock.advance(2)
    assert handler.typing_in_room(ROOM) == []


def test_stopping_removes_at_once_and_cancels_the_expiry(handler: TypingHandler, clock: Clock) -> None:
    handler.started(ROOM, ALICE, 10_000)
    handler.started(ROOM, BOB, 10_000)
    position = handler.typing_position()
    handler.stopped(ROOM, ALICE)
    assert handler.typing_in_room(ROOM) == [BOB]
    assert handler.typing_position() == position + 1
    assert [call.func for call in clock.getDelayedCalls()] == [handler._expire]
    handler.stopped(ROOM, ALICE)  # not typing: nothing changes
    assert handler.typing_position() == position + 1


def test_timeout_is_capped(handler: TypingHandler, clock: Clock) -> None:
    handler.started(ROOM, ALICE, 10**9)
    clock.advance(MAX_TIMEOUT_MS / 1000 - 0.001)
    assert handler.typing_in_room(ROOM) == [ALICE]
    clock.advance(0.001)
    assert handler.typing_in_room(ROOM) == []


def test_rooms_changed_since_names_only_rooms_that_changed(handler: TypingHandler) -> None:
    handler.started(ROOM, ALICE, 10_000)
    first = handler.typing_position()
    handler.started(OTHER_ROOM, ALICE, 10_000)
    assert handler.rooms_changed_since(0) == {ROOM, OTHER_ROOM}
    assert handler.rooms_changed_since(first) == {OTHER_ROOM}
    assert handler.rooms_changed_since(handler.typing_position()) == set()
    handler.stopped(ROOM, ALICE)
    assert handler.rooms_changed_since(first) == {ROOM, OTHER_ROOM}
    assert handler.typing_in_room(ROOM) == []


def test_position_from_before_a_restart_gets_rooms_with_typists(handler: TypingHandler) -> None:
    handler.started(ROOM, ALICE, 10_000)
    handler.started(OTHER_ROOM, ALICE, 10_000)
    handler.stopped(OTHER_ROOM, ALICE)
    assert handler.rooms_changed_since(handler.typing_position() + 100) == {ROOM}


def test_changes_wake_the_rooms_members(clock: Clock) -> None:
    async def members(room_id: str) -> Iterable[str]:
        return [ALICE, BOB] if room_id == ROOM else [ALICE]

    handler = TypingHandler(clock, Memberships({}), Notifier(clock, members))
    assert handler.notifier is not None
    bob = handler.notifier.listen(BOB)
    handler.started(OTHER_ROOM, ALICE, 1_000)
    assert not bob.deferred.called
    handler.started(ROOM, ALICE, 1_000)
    assert bob.deferred.called
    bob.close()
    bob = handler.notifier.listen(BOB)
    clock.advance(1)  # the expiry wakes them too
    assert bob.deferred.called


def test_set_typing_only_for_yourself_in_a_joined_room(handler: TypingHandler) -> None:
    alice, bob = Requester(ALICE, "A"), Requester(BOB, "B")
    resolve(handler.set_typing(alice, ROOM, ALICE, True, None))
    assert handler.typing_in_room(ROOM) == [ALICE]
    with pytest.raises(MatrixError) as e:
        resolve(handler.set_typing(bob, ROOM, ALICE, False, None))
    assert (e.value.code, e.value.errcode) == (403, "M_FORBIDDEN")
    with pytest.raises(MatrixError) as e:
        resolve(handler.set_typing(bob, OTHER_ROOM, BOB, True, 1_000))
    assert (e.value.code, e.value.errcode) == (403, "M_FORBIDDEN")
    resolve(handler.set_typing(alice, ROOM, ALICE, False, None))
    assert handler.typing_in_room(ROOM) == []

"""Turns: work that many waiters resume together runs a slice at a time, with the reactor free between."""

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from homeserver.handlers.turns import Turns


class Iterations:
    """A reactor whose iterations the test runs one at a time: callLater(0, f) runs f in the next one."""

    def __init__(self) -> None:
        self.next: list[Callable[[], Any]] = []

    def callLater(self, delay: float, fn: Callable[[], Any]) -> object:  # noqa: N802 (the reactor's name)
        self.next.append(fn)
        return fn

    def iterate(self) -> None:
        due, self.next = self.next, []
        for fn in due:
            fn()


def test_waiters_go_in_order_a_slice_at_a_time() -> None:
    reactor, now = Iterations(), [0.0]
    turns = Turns(reactor, slice_s=0.005, clock=lambda: now[0])
    done: list[int] = []

    async def work(n: int) -> None:
        await turns.take()
        now[0] += 0.002  # each waiter's work takes 2 ms
        done.append(n)

    for n in range(5):
        defer.ensureDeferred(work(n))
    assert done == [] and turns.waiting == 5  # nothing runs in the turn that queued them
    reactor.iterate()
    assert done == [0, 1, 2]  # 6 ms of work: the slice was spent after the third
    reactor.iterate()
    assert done == [0, 1, 2, 3, 4] and turns.slices == 2 and turns.waiting == 0


def test_a_waiter_that_gave_up_is_skipped() -> None:
    reactor = Clock()
    turns = Turns(reactor)
    gone = defer.ensureDeferred(turns.take())
    kept = defer.ensureDeferred(turns.take())
    gone.cancel()
    gone.addErrback(lambda f: f.trap(defer.CancelledError))
    reactor.advance(0)
    assert kept.called


def test_without_a_reactor_a_turn_is_taken_at_once() -> None:
    taken = defer.ensureDeferred(Turns(None).take())
    assert taken.called

"""Turns: CPU work that many waiters would resume at once, run a slice at a time.

When a computation a herd of clients shares finishes, all of them resume in the same reactor turn; if
each then builds its response without waiting on anything, the reactor serves nothing else until the
last is done (three hundred clients at a millisecond each hold a `whoami` for 300 ms). Taking a turn
first queues the work: each reactor iteration runs queued work for up to `slice_s`, then polls for I/O
(other requests, a monitor's probe) before the next slice.
"""

import collections
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

SLICE_S = 0.005


class Turns:
    def __init__(self, reactor: Any, slice_s: float = SLICE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._reactor = reactor
        self._slice_s = slice_s
        self._clock = clock
        self._queue: collections.deque[defer.Deferred] = collections.deque()
        self._call: Any = None
        self.slices = 0  # reactor iterations that ran queued work: tests and metrics

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def take(self) -> None:
        """Return in a later reactor iteration, in order of arrival (at once without a reactor: inline)."""
        if self._reactor is None:
            return
        waiter: defer.Deferred = defer.Deferred()
        self._queue.append(waiter)
        if self._call is None:
            self._call = self._reactor.callLater(0, self._run)
        await waiter

    def _run(self) -> None:
        self._call = None
        self.slices += 1
        end = self._clock() + self._slice_s
        while self._queue and self._clock() < end:
            waiter = self._queue.popleft()
            if not waiter.called:  # not cancelled (a request that gave up)
                waiter.callback(None)  # runs the waiter's work up to its next wait, or to its end
        if self._queue:
            self._call = self._reactor.callLater(0, self._run)

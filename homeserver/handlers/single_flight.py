"""Single-flight: identical concurrent requests share one computation.

The computation runs on its own: a caller that goes away (a client disconnect, a deadline) stops
waiting for it but does not cancel it for the others. A finished result may be kept for `keep_s`
seconds too, because a client that timed out retries the same request, and throwing away a result
that took long to compute is how big initial syncs never finished on other servers.
"""

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

MAX_KEPT = 1000


class SingleFlight:
    def __init__(self, keep_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._keep_s = keep_s
        self._clock = clock
        self._waiters: dict[Hashable, list[defer.Deferred]] = {}
        self._done: dict[Hashable, tuple[float, Any]] = {}
        self.computed = 0  # computations started: tests and metrics
        self.shared = 0  # requests answered by another's computation or a kept result

    async def run(
        self, key: Hashable, compute: Callable[[], Awaitable[Any]], keep: Callable[[Any], bool] = lambda _: True
    ) -> Any:
        """The result of `compute()`, shared with identical concurrent calls; kept afterwards if
        `keep(result)`."""
        self._expire()
        if key in self._done:
            self.shared += 1
            return self._done[key][1]
        waiter: defer.Deferred = defer.Deferred()  # cancelling it leaves the computation running
        if key in self._waiters:
            self.shared += 1
            self._waiters[key].append(waiter)
        else:
            self.computed += 1
            self._waiters[key] = [waiter]
            defer.ensureDeferred(compute()).addBoth(self._finished, key, keep)
        return await waiter

    def _finished(self, result: Any, key: Hashable, keep: Callable[[Any], bool]) -> None:
        if not isinstance(result, Failure) and len(self._done) < MAX_KEPT and keep(result):
            self._done[key] = (self._clock() + self._keep_s, result)
        for waiter in self._waiters.pop(key):
            if not waiter.called:
                waiter.callback(result)  # a Failure goes to the waiter's errbacks

    def forget(self, predicate: Callable[[Hashable], bool]) -> None:
        """Drop kept results whose key matches: they must not be replayed any more."""
        for key in [k for k in self._done if predicate(k)]:
            del self._done[key]

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, (expires, _) in self._done.items() if expires <= now]:
            del self._done[key]
